"""Serve's errors, rooted at :class:`ServeError` (itself a ``RuntimeBaseError``).

The tree::

    RuntimeBaseError (runtime.exceptions)
    └── ServeError
        ├── BackPressureError (also RuntimeError): a deployment's queue is full; HTTP 503
        ├── DeploymentUnavailableError: no replica is running and none came up in time
        └── RequestCancelledError (also asyncio.CancelledError's sibling, a RuntimeError)

``HTTPException`` is not an error of Serve itself: user code raises it to answer with a
status code (``raise serve.HTTPException(404, "no such item")``), as in FastAPI.
"""

from __future__ import annotations

from runtime.exceptions import RuntimeBaseError


class ServeError(RuntimeBaseError):
    """The root of every error Serve raises."""


class BackPressureError(ServeError, RuntimeError):
    """A deployment had no free replica slot and its bounded queue was full.

    Raised by handle calls; the HTTP ingress answers 503. Retry later, raise
    ``max_queued_requests`` or add replicas.
    """


class DeploymentUnavailableError(ServeError):
    """The deployment (or application) does not exist, or no replica came up in time."""


class RequestCancelledError(ServeError, RuntimeError):
    """The request was cancelled (its client went away or ``response.cancel()`` was called)."""


class ReplicaDrainingError(ServeError):
    """Internal: a replica that is shutting down refused a request (it did not run it).

    Routers catch it and send the request to another replica.
    """


class ReplicaFullError(ServeError):
    """Internal: a replica already runs ``max_ongoing_requests`` requests (it did not run this).

    The cap holds across every caller: routers that counted only their own requests learn
    the replica is full from this refusal, and send the request elsewhere or queue it.
    """


class HTTPException(Exception):
    """Raise in a deployment to answer with ``status_code`` and ``detail`` as a JSON body."""

    def __init__(self, status_code: int, detail: str = "") -> None:
        super().__init__(status_code, detail)
        self.status_code = int(status_code)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"
