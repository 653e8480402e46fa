"""Serve's configuration objects under Ray's module path ``serve.config``.

``HTTPOptions`` (the HTTP ingress: where it listens and how it protects itself),
``ProxyLocation``, ``gRPCOptions``, and the deployment-side ``AutoscalingConfig`` and
``DeploymentConfig``. ``serve.start(http_options=..., proxy_location=...)`` takes them (or
the equivalent dicts).
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import math
from typing import Any

from ._config import AutoscalingConfig, DeploymentConfig

__all__ = [
    "AutoscalingConfig",
    "DeploymentConfig",
    "HTTPOptions",
    "ProxyLocation",
    "gRPCOptions",
]


class ProxyLocation(enum.StrEnum):
    """Where Serve runs HTTP proxies.

    ``EveryNode`` (Ray's default): a proxy on every node, all on the same port (the node
    processes of one host share it with SO_REUSEPORT); ``HeadOnly``: one proxy for the
    cluster (the default here; it runs wherever the scheduler put it and restarts on
    another node if its node dies); ``Disabled``: no HTTP.
    """

    Disabled = "Disabled"
    HeadOnly = "HeadOnly"
    EveryNode = "EveryNode"

    @classmethod
    def parse(cls, value: ProxyLocation | str | None) -> ProxyLocation:
        if value is None:
            return cls.HeadOnly
        if isinstance(value, cls):
            return value
        for member in cls:
            if isinstance(value, str) and value.lower() in (member.value.lower(), member.name):
                return member
        raise ValueError(f"proxy_location must be one of {[m.value for m in cls]}, got {value!r}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds only the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass
class HTTPOptions:
    """The HTTP ingress: Ray's ``host``, ``port``, ``root_path``, ``request_timeout_s``,
    ``keep_alive_timeout_s``, and the limits that protect the proxy from its clients.

    - ``max_body_bytes``: larger request bodies answer 413.
    - ``max_queued_bytes``: the request bodies the proxy holds at once (read, queued or in
      flight to a replica); beyond it new requests answer 503 with ``Retry-After``.
    - ``max_connections``: open client connections; beyond it new ones are closed at once.
    - ``header_timeout_s``: a connection that has not sent a whole request head this long
      after it opened, or after its previous answer, is closed (this is also the idle
      keep-alive bound, Ray's ``keep_alive_timeout_s``; the smaller of the two applies).
    - ``body_timeout_s``: a request whose body has not arrived in this time answers 408.
    - ``request_timeout_s``: an answer not ready in this time is 408 (None: no bound).
    - ``hide_exception_text``: a deployment's exception answers 500 without its message
      (the type and the message go to the replica's log). None (the default): hidden when
      ``host`` is not a loopback address.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    root_path: str = ""
    request_timeout_s: float | None = None
    keep_alive_timeout_s: float = 5.0
    max_body_bytes: int = 16 * 1024 * 1024
    max_queued_bytes: int = 256 * 1024 * 1024
    max_connections: int = 4096
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    hide_exception_text: bool | None = None
    location: str | None = None  # Ray's deprecated spelling of proxy_location

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"HTTPOptions.host must be a non-empty string, got {self.host!r}")
        if not isinstance(self.port, int) or not 0 <= self.port < 65536:
            raise ValueError(f"HTTPOptions.port must be an int in [0, 65535], got {self.port!r}")
        for name in ("max_body_bytes", "max_queued_bytes", "max_connections"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"HTTPOptions.{name} must be an int >= 1, got {value!r}")
        for name in ("keep_alive_timeout_s", "header_timeout_s", "body_timeout_s"):
            _positive(name, getattr(self, name))
        if self.request_timeout_s is not None:
            _positive("request_timeout_s", self.request_timeout_s)

    @classmethod
    def parse(cls, value: HTTPOptions | dict[str, Any] | None) -> HTTPOptions:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"http_options must be a dict or HTTPOptions, got {value!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(value) - known - {"disabled"}
        if unknown:
            raise ValueError(f"unknown http_options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: v for k, v in value.items() if k != "disabled"})

    def hides_exceptions(self) -> bool:
        if self.hide_exception_text is not None:
            return bool(self.hide_exception_text)
        return not is_loopback(self.host)


@dataclasses.dataclass
class gRPCOptions:
    """The gRPC ingress: ``port`` (0 picks a free one) and ``grpc_servicer_functions``, the
    import paths of the generated ``add_*Servicer_to_server`` functions. Each proxy serves
    gRPC next to HTTP when any are given (grpcio needed); unary RPCs only."""

    port: int = 9000
    grpc_servicer_functions: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def parse(cls, value: gRPCOptions | dict[str, Any] | None) -> gRPCOptions:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"grpc_options must be a dict or gRPCOptions, got {value!r}")
        return cls(**value)


def _positive(name: str, value: Any) -> None:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"HTTPOptions.{name} must be a finite number > 0, got {value!r}")
