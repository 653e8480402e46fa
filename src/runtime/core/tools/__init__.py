"""Top layer: programs.

The command line, the node's main, the dashboard, job submission.
"""
