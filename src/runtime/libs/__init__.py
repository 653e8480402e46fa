"""Layer 2: building blocks the libraries share, over the public core API only.

``runtime.libs.trainable``: the trainable-factory interface through which a Train trainer
or an RLlib algorithm becomes a Tune trainable. ``runtime.libs.checkpoint``: the directory
checkpoint Tune and Train share. Tune, Train, RLlib, Serve and Data add their other shared
pieces here.
"""

from runtime.libs import checkpoint, trainable

__all__ = ["checkpoint", "trainable"]
