"""An application for the CLI tests (imported as ``tests.serve.cli_app:app``)."""

from __future__ import annotations

from runtime import serve


@serve.deployment
class Greeter:
    def __init__(self) -> None:
        self.greeting = "hello"

    def reconfigure(self, config: dict) -> None:
        self.greeting = config["greeting"]

    async def __call__(self, request: serve.Request) -> dict:
        return {"greeting": self.greeting}


app = Greeter.bind()


def build(args: dict) -> serve.Application:
    """A builder function, as config files may name."""
    return Greeter.options(num_replicas=args.get("replicas", 1)).bind()


tuned = Greeter.options(
    name="Tuned",
    num_replicas=2,
    max_ongoing_requests=7,
    user_config={"greeting": "hi"},
    version="v1",
    autoscaling_config=None,
).bind()
