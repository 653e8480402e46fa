"""Layer 2: bytes between processes.

Message types, framing and connections, TLS, admission, the heartbeat channel, value
serialization.
"""
