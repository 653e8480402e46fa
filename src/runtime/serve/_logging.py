"""A deployment's ``logging_config``, applied in each of its replicas.

Replicas of several deployments may share a node process (and so its loggers): each replica
adds one handler to the ``runtime.serve`` and ``ray.serve`` loggers that takes only the
records emitted while that replica runs its code (its context variable is set), at its
level, and writes them as text or JSON lines to its own file or to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from ._config import LoggingConfig
from ._context import ReplicaContext, current_replica, current_request

#: The loggers a replica's records are taken from (and their children): Ray code logs to
#: ``ray.serve``.
LOGGERS = ("runtime.serve", "ray.serve")


class _ThisReplica(logging.Filter):
    """Passes the records emitted while one replica runs its code, at its level or above."""

    def __init__(self, ctx: ReplicaContext, level: int) -> None:
        super().__init__()
        self.ctx = ctx
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "serve_replica"):  # an access line carries its own
            replica = current_replica.get()
            if replica is None or replica.replica_tag != self.ctx.replica_tag:
                return False
            request = current_request.get()
            record.serve_request_id = request.request_id if request is not None else ""
        if record.levelno < self.level:
            return False
        record.serve_app = self.ctx.app_name
        record.serve_deployment = self.ctx.deployment
        record.serve_replica = self.ctx.replica_tag
        return True


class _Json(logging.Formatter):
    """One JSON object per record."""

    def __init__(self, attrs: tuple[str, ...]) -> None:
        super().__init__()
        self.attrs = attrs

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "message": record.getMessage(),
            "application": getattr(record, "serve_app", ""),
            "deployment": getattr(record, "serve_deployment", ""),
            "replica": getattr(record, "serve_replica", ""),
            "request_id": getattr(record, "serve_request_id", ""),
        }
        for attr in self.attrs:
            out[attr] = getattr(record, attr, None)
        if record.exc_info:
            out["exc_text"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_TEXT = (
    "%(asctime)s %(levelname)s %(serve_deployment)s %(serve_replica)s "
    "%(serve_request_id)s -- %(message)s"
)


class ReplicaLogging:
    """One replica's handler on the Serve loggers, installed until :meth:`close`."""

    def __init__(self, config: dict[str, Any], ctx: ReplicaContext) -> None:
        cfg = LoggingConfig.parse(dict(config))
        assert cfg is not None
        self.access_log = cfg.enable_access_log
        if cfg.logs_dir is not None:
            os.makedirs(cfg.logs_dir, exist_ok=True)
            safe = ctx.replica_tag.replace("#", "_").replace(os.sep, "_")
            self.path: str | None = os.path.join(cfg.logs_dir, f"replica_{safe}.log")
            handler: logging.Handler = logging.FileHandler(self.path, encoding="utf-8")
        else:
            self.path = None
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            _Json(cfg.additional_log_standard_attrs)
            if cfg.encoding == "JSON"
            else logging.Formatter(_TEXT)
        )
        handler.addFilter(_ThisReplica(ctx, cfg.level))
        self.handler = handler
        self.ctx = ctx
        for name in LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            if logger.getEffectiveLevel() > cfg.level:
                logger.setLevel(cfg.level)

    def access(self, method: str, path: str, status: int, started: float, request_id: str) -> None:
        """One line for an HTTP request this replica answered."""
        if not self.access_log:
            return
        ms = (time.perf_counter() - started) * 1000
        record = logging.LogRecord(
            "runtime.serve.access", logging.INFO, __file__, 0,
            "%s %s %d %.1fms", (method, path, status, ms), None,
        )  # fmt: skip
        record.serve_replica = self.ctx.replica_tag
        record.serve_request_id = request_id
        self.handler.handle(record)

    def close(self) -> None:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(self.handler)
        self.handler.close()
