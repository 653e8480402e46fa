"""Layer 2: building blocks the libraries share, over the public core API only.

Empty for now; Tune, Train, RLlib, Serve and Data add their shared pieces here.
"""
