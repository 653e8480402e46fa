"""Optional TLS on the mesh, on top of the token handshake: mutual, against a cluster CA.

Every member presents a certificate signed by the cluster's CA and checks the peer's the
same way (names are not checked: membership is proven by the CA and the token). Nodes take
``--tls-cert/--tls-key/--tls-ca``; drivers and child processes read ``RUNTIME_TLS_CERT``,
``RUNTIME_TLS_KEY`` and ``RUNTIME_TLS_CA``.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class TlsConfig:
    cert: str
    key: str
    ca: str

    @classmethod
    def from_env(cls) -> TlsConfig | None:
        cert, key, ca = (os.environ.get(f"RUNTIME_TLS_{n}") for n in ("CERT", "KEY", "CA"))
        if not (cert or key or ca):
            return None
        if not (cert and key and ca):
            raise ValueError(
                "TLS needs all of RUNTIME_TLS_CERT, RUNTIME_TLS_KEY and RUNTIME_TLS_CA"
            )
        return cls(cert, key, ca)

    def export(self) -> dict[str, str]:
        """The environment that makes child processes use the same files."""
        return {
            "RUNTIME_TLS_CERT": self.cert,
            "RUNTIME_TLS_KEY": self.key,
            "RUNTIME_TLS_CA": self.ca,
        }

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.check_hostname = False  # members are proven by the cluster CA, not by name
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx
