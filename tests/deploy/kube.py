"""Reading the Kubernetes manifests of ``deploy/kubernetes`` the way Kubernetes would: the
resources of a kustomization, JSON patches applied, ``$(VAR)`` references expanded."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def resources(overlay: str = "base") -> list[dict[str, Any]]:
    """Every resource ``kubectl apply -k deploy/kubernetes/<overlay>`` would send (resources
    and JSON6902 patches of the kustomization; image and label transforms left out)."""
    folder = KUBERNETES / overlay
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for item in kust.get("resources", []):
        path = (folder / item).resolve()
        if path.is_dir():
            out += resources(str(path.relative_to(KUBERNETES)))
        else:
            out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in kust.get("patches", []):
        ops = yaml.safe_load((folder / patch["path"]).read_text())
        target = patch["target"]
        for res in out:
            if res["kind"] == target["kind"] and res["metadata"]["name"] == target["name"]:
                apply_json_patch(res, ops)
    return out


def apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """Apply RFC 6902 ``add`` and ``replace`` operations (what the overlays use) in place."""
    for op in ops:
        if op["op"] not in ("add", "replace"):
            raise ValueError(f"unsupported JSON patch op {op['op']!r}")
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        value = copy.deepcopy(op["value"])
        if isinstance(node, list):
            if last == "-":
                node.append(value)
            elif op["op"] == "add":
                node.insert(int(last), value)
            else:
                node[int(last)] = value
        else:
            node[last] = value


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise KeyError(f"no {kind}/{name}")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def environment(ctr: dict[str, Any], field_refs: dict[str, str]) -> dict[str, str]:
    """The container's environment, as the kubelet makes it: ``fieldRef`` values from
    ``field_refs`` (e.g. ``{"status.podIP": "10.0.0.5"}``), ``$(VAR)`` of earlier ones
    expanded."""
    env: dict[str, str] = {}
    for item in ctr.get("env", []):
        if "valueFrom" in item:
            env[item["name"]] = field_refs[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = expand(item["value"], env)
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes, the rest
    is kept as written."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )
