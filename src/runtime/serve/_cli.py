"""``python -m runtime.serve``: run an app, deploy a config file, show status, shut down.

::

    python -m runtime.serve run module:app [--address A] [--name N] [--route-prefix P]
                                           [--host H] [--port P] [--non-blocking]
    python -m runtime.serve deploy config.yaml [--address A]
    python -m runtime.serve build module:app [module:app ...] [-o config.yaml]
    python -m runtime.serve status [--address A]
    python -m runtime.serve shutdown [--address A]

``run`` joins the cluster at ``--address`` (default: the local cluster started with
``python -m runtime.node --head`` if there is one, else a new local mesh), deploys the app
and serves until Ctrl-C, then shuts Serve down. ``deploy`` declares the applications of a
config file (Ray Serve's format, below) on a running cluster and returns; they keep running.
``build`` writes such a config file for apps (every deployment with the options it was
declared with that differ from the defaults), to edit and ``deploy``; it needs no cluster.

.. code-block:: yaml

    http_options: {host: 127.0.0.1, port: 8000}
    applications:
      - name: default
        route_prefix: /
        import_path: my_module:app          # an Application, or a function returning one
        args: {}                            # passed to that function
        runtime_env:                        # for every deployment of the app
          working_dir: ./my_project         # a local directory; import_path may live there
          env_vars: {MODEL_SIZE: small}
        deployments:                        # per-deployment option overrides, by name
          - name: Model
            num_replicas: 2
            user_config: {threshold: 0.5}
            placement_group_bundles: [{CPU: 1}, {CPU: 1}]
            placement_group_strategy: PACK
            logging_config: {encoding: JSON, log_level: DEBUG, logs_dir: /tmp/serve-logs}
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import runtime

from . import _api
from ._deployment import Application


def import_app(path: str, args: dict[str, Any] | None = None) -> Application:
    """Import ``module:attribute``: an Application, or a builder function returning one."""
    if ":" not in path:
        raise ValueError(f"an import path is 'module:attribute', got {path!r}")
    module_name, _, attr = path.partition(":")
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` does
    module = importlib.import_module(module_name)
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(target, Application) and callable(target):
        target = target(args or {}) if args is not None else target()
    if not isinstance(target, Application):
        raise TypeError(
            f"{path} is {type(target).__name__}, not an application: "
            "point it at `MyDeployment.bind(...)` (or a function that returns one)"
        )
    return target


def apply_overrides(app: Application, overrides: list[dict[str, Any]]) -> None:
    """Apply per-deployment options from a config file to the bound graph, by name."""
    by_name = {}
    for entry in overrides:
        opts = dict(entry)
        name = opts.pop("name", None)
        if not name:
            raise ValueError(f"each entry of 'deployments' needs a name: {entry!r}")
        by_name[name] = opts
    found: set[str] = set()
    for node in _applications(app):
        wanted = by_name.get(node.deployment.name)
        if wanted:
            found.add(node.deployment.name)
            node.deployment = node.deployment.options(**wanted)
    missing = set(by_name) - found
    if missing:
        raise ValueError(f"the config names deployments that the app does not have: {missing}")


def apply_runtime_env(app: Application, env: dict[str, Any]) -> None:
    """Give every deployment of the graph the application's ``runtime_env`` (a deployment's
    own ``ray_actor_options.runtime_env`` keys win; ``env_vars`` merge), as Ray does."""
    if not isinstance(env, dict):
        raise ValueError(f"an application's runtime_env must be a mapping, got {env!r}")
    for node in _applications(app):
        dep = node.deployment
        own = dict(dep.config.ray_actor_options.get("runtime_env") or {})
        merged = {**env, **own}
        if "env_vars" in env or "env_vars" in own:
            merged["env_vars"] = {**env.get("env_vars", {}), **own.get("env_vars", {})}
        options = {**dep.config.ray_actor_options, "runtime_env": merged}
        node.deployment = dep.options(ray_actor_options=options)


def _applications(app: Application) -> list[Application]:
    """Every node of a bound graph, each once: the app and the bound deployments among
    its arguments, at any depth in lists, tuples and dicts."""
    seen: set[int] = set()
    out: list[Application] = []

    def visit(value: Any) -> None:
        if isinstance(value, Application):
            if id(value) in seen:
                return
            seen.add(id(value))
            out.append(value)
            for v in (*value.args, *value.kwargs.values()):
                visit(v)
        elif isinstance(value, list | tuple):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)

    visit(app)
    return out


@contextlib.contextmanager
def _importable_from(env: dict[str, Any] | None) -> Iterator[None]:
    """The app's ``working_dir`` (a local directory) on ``sys.path`` while it is imported, so
    that its ``import_path`` may name a module that lives only there (as in Ray)."""
    working_dir = (env or {}).get("working_dir")
    if not isinstance(working_dir, str) or not os.path.isdir(working_dir):
        yield
        return
    path = os.path.abspath(working_dir)
    sys.path.insert(0, path)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(path)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _connect(address: str | None, *, start_local: bool) -> None:
    if address is not None:
        runtime.init(address=address)
        return
    try:
        runtime.init(address="auto")
    except Exception:
        if not start_local:
            raise
        runtime.init()


def _status_dict() -> dict[str, Any]:
    st = _api.status()
    return {
        "http": {"host": st.http_host, "port": st.http_port},
        "applications": {name: dataclasses.asdict(a) for name, a in st.applications.items()},
    }


def _plain(value: Any) -> Any:
    """``value`` with its tuples as lists (a YAML file has no tuples)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def build_config(import_paths: list[str], host: str, port: int) -> dict[str, Any]:
    """Ray Serve's config format for these apps: names, routes, each deployment's options."""
    from ._config import DeploymentConfig
    from ._deployment import build

    defaults = DeploymentConfig()
    apps = []
    for i, path in enumerate(import_paths):
        name = "default" if len(import_paths) == 1 else f"app{i + 1}"
        _, specs = build(import_app(path), name)
        deployments = []
        for spec in specs:
            entry: dict[str, Any] = {"name": spec.name}
            for field in dataclasses.fields(DeploymentConfig):
                value = getattr(spec.config, field.name)
                if value != getattr(defaults, field.name):
                    if dataclasses.is_dataclass(value) and not isinstance(value, type):
                        value = {
                            k: v for k, v in dataclasses.asdict(value).items() if v is not None
                        }
                    entry[field.name] = _plain(value)
            deployments.append(entry)
        apps.append({
            "name": name,
            "route_prefix": "/" if len(import_paths) == 1 else f"/{name}",
            "import_path": path,
            "deployments": deployments,
        })  # fmt: skip
    return {"http_options": {"host": host, "port": port}, "applications": apps}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="deploy an app and serve it until Ctrl-C")
    run.add_argument("import_path", help="module:app")
    run.add_argument("--address", help="HOST:PORT of the head (default: local)")
    run.add_argument("--name", default="default")
    run.add_argument("--route-prefix", default="/")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--non-blocking", action="store_true", help="deploy, then exit")
    dep = sub.add_parser("deploy", help="deploy the applications of a config file")
    dep.add_argument("config")
    dep.add_argument("--address", default="auto")
    bld = sub.add_parser("build", help="write a config file for apps")
    bld.add_argument("import_paths", nargs="+", help="module:app")
    bld.add_argument("-o", "--output-path", help="the file to write (default: stdout)")
    bld.add_argument("--host", default="127.0.0.1")
    bld.add_argument("--port", type=int, default=8000)
    for name in ("status", "shutdown"):
        p = sub.add_parser(name)
        p.add_argument("--address", default="auto")
    args = ap.parse_args(argv)

    if args.command == "run":
        app = import_app(args.import_path)
        _connect(args.address, start_local=True)
        _api.start(http_options={"host": args.host, "port": args.port})
        _api.run(app, name=args.name, route_prefix=args.route_prefix)
        if not args.non_blocking:
            signal.signal(signal.SIGTERM, _interrupt)  # before saying we serve: tests race it
        st = _api.status()
        # A SIGTERM may come as soon as the line is out, before pause() is reached: the
        # interruption is caught from the print on.
        with contextlib.suppress(KeyboardInterrupt):
            print(
                f"serving {args.import_path} as {args.name!r} on "
                f"http://{st.http_host}:{st.http_port}{args.route_prefix}",
                flush=True,
            )
            if args.non_blocking:
                return 0
            signal.pause()
        _api.shutdown()
        runtime.shutdown()
        return 0
    if args.command == "build":
        import yaml

        text = yaml.safe_dump(
            build_config(args.import_paths, args.host, args.port), sort_keys=False
        )
        if args.output_path:
            with open(args.output_path, "w") as f:
                f.write(text)
            print(f"wrote {args.output_path}", flush=True)
        else:
            print(text, end="", flush=True)
        return 0
    if args.command == "deploy":
        import yaml

        with open(args.config) as f:
            config = yaml.safe_load(f) or {}
        apps = config.get("applications")
        if not isinstance(apps, list) or not apps:
            raise SystemExit(f"{args.config}: 'applications' must be a non-empty list")
        built = []
        for item in apps:
            if "import_path" not in item:
                raise SystemExit(f"{args.config}: an application needs an import_path: {item}")
            env = item.get("runtime_env")
            with _importable_from(env):
                app = import_app(item["import_path"], item.get("args"))
            apply_overrides(app, item.get("deployments") or [])
            if env:
                apply_runtime_env(app, env)
            built.append((app, item.get("name", "default"), item.get("route_prefix", "/"),
                          item.get("logging_config")))  # fmt: skip
        _connect(args.address, start_local=False)
        _api.start(http_options=config.get("http_options"))
        for app, name, prefix, logging_config in built:
            _api.deploy(app, name=name, route_prefix=prefix, logging_config=logging_config)
            print(f"deployed {name!r} at route prefix {prefix!r}", flush=True)
        return 0
    _connect(args.address, start_local=False)
    if args.command == "status":
        print(json.dumps(_status_dict(), indent=2))
        return 0
    _api.shutdown()
    print("Serve is shut down", flush=True)
    return 0
