"""Remote drivers: a driver outside the cluster's network reaches it through one port of the
head (``runtime.init("runtime://HEAD:CLIENT_PORT")``, as Ray Client's ``ray://``).

The head's :class:`~.relay.ClientRelay` (``python -m runtime.node --head --client-port
10001``) relays the driver's connections into the mesh, byte for byte, after the driver
proved the cluster token; the driver is a member of the mesh like any other (its calls,
objects and errors are the mesh's own messages, under the mesh's own handshake and TLS, end
to end), only its connections go through the head (:class:`~.tunnel.RelayTunnel`).
"""
