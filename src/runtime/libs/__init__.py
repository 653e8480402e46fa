"""Layer 2: building blocks the libraries share, over the public core API only.

``runtime.libs.trainable``: the trainable-factory interface through which a Train trainer
or an RLlib algorithm becomes a Tune trainable. Tune, Train, RLlib, Serve and Data add
their other shared pieces here.
"""

from runtime.libs import trainable

__all__ = ["trainable"]
