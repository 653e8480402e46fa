"""UserCallback: hooks the controller calls in the driver (Ray Train's ``UserCallback``)."""

from __future__ import annotations

from typing import Any

from ._checkpoint import Checkpoint


class UserCallback:
    """Subclass and pass in ``RunConfig(callbacks=[...])``; every hook is optional.

    Hooks run in the driver, in the controller, one at a time: keep them short.
    """

    def after_report(
        self,
        run_context: Any,
        metrics: list[dict[str, Any]],
        checkpoint: Checkpoint | None,
    ) -> None:
        """After every rank made a report: ``metrics[r]`` is rank r's, ``checkpoint`` the
        persisted checkpoint of that report (or None)."""

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        """After a rank failed (before a restart, if any): rank -> its exception."""
