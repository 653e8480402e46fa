"""Layer 3: objects.

References and the reference table, the local store (segments, spilling), and the object
plane that owns, fetches and frees objects.
"""
