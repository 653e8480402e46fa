"""Layer 6: running work on a node.

The executor (tasks and resources), hosted actors, runtime environments, task output
capture.
"""
