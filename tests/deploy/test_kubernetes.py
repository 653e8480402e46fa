"""``deploy/kubernetes``: valid for a current Kubernetes, consistent with itself, and its
container commands and probes make a working cluster on simulated hosts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

from ..hosts.harness import RUNTIME_TMP, TOKEN_PATH  # noqa: E402
from .kube import DEPLOY, container, environment, expand, find, resources  # noqa: E402

#: The Kubernetes version whose schemas the manifests must pass (kubernetes-validate ships them).
KUBERNETES_VERSION = "1.37.0"
OVERLAYS = ["base", "tls", "client"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_passes_the_kubernetes_schemas_strictly(overlay):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e .[deploy]")
    docs = resources(overlay)
    assert {d["kind"] for d in docs} == {"Service", "StatefulSet", "Deployment"}
    for doc in docs:
        kv.validate(doc, KUBERNETES_VERSION, strict=True)  # raises ValidationError


def test_a_resource_with_a_wrong_field_fails_the_schemas():
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e .[deploy]")
    head = find(resources(), "StatefulSet", "runtime-head")
    container(head)["livenessProbe"]["periodSecond"] = 10  # a typo strict validation catches
    with pytest.raises(kv.ValidationError):
        kv.validate(head, KUBERNETES_VERSION, strict=True)


#: The downward API's values for a worker pod (the kubelet fills them in).
POD_FIELDS = {"status.podIP": "10.0.0.9", "metadata.name": "runtime-worker-x"}


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_a_worker_pod_requests_the_cpus_its_node_processes_offer():
    worker = container(find(resources(), "Deployment", "runtime-worker"))
    env = environment(worker, POD_FIELDS)
    args = [expand(a, env) for a in worker["args"]]
    offered = float(_arg(args, "--num-cpus"))  # the host's, shared by its --procs processes
    assert float(worker["resources"]["requests"]["cpu"]) == offered
    # Each process's object store fits in the pod's shared memory, which fits in its limit.
    shm = next(v for v in _pod(worker)["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert _gib(shm["emptyDir"]["sizeLimit"]) >= int(_arg(args, "--procs")) * _gib(
        _arg(args, "--object-store-memory")
    )
    assert _gib(worker["resources"]["limits"]["memory"]) > _gib(shm["emptyDir"]["sizeLimit"])


def _pod(ctr: dict[str, Any]) -> dict[str, Any]:
    for doc in resources():
        spec = doc["spec"].get("template", {}).get("spec", {})
        if ctr in spec.get("containers", []):
            return spec
    raise KeyError(ctr["name"])


def _gib(size: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "GB": 1e9 / 2**30, "MB": 1e6 / 2**30}
    for unit, scale in units.items():
        if size.endswith(unit):
            return float(size[: -len(unit)]) * scale
    raise ValueError(size)


def test_the_head_keeps_its_state_on_a_persistent_volume_and_serves_the_service_ports():
    docs = resources()
    head = find(docs, "StatefulSet", "runtime-head")
    ctr = container(head)
    state = _arg(ctr["args"], "--state-dir")
    claims = {c["metadata"]["name"] for c in head["spec"]["volumeClaimTemplates"]}
    mount = next(m for m in ctr["volumeMounts"] if state.startswith(m["mountPath"] + "/"))
    assert mount["name"] in claims
    service = find(docs, "Service", "runtime-head")
    assert head["spec"]["serviceName"] == "runtime-head"
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert {p["targetPort"]: p["port"] for p in service["spec"]["ports"]} == ports
    assert ports["mesh"] == int(_arg(ctr["args"], "--port"))
    assert ports["dashboard"] == int(_arg(ctr["args"], "--dashboard-port"))
    worker = container(find(docs, "Deployment", "runtime-worker"))
    head_env = environment(worker, POD_FIELDS)["RUNTIME_HEAD"]
    assert head_env == f"runtime-head:{ports['mesh']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_a_user_with_the_token_from_a_secret_probes_and_a_grace_period(overlay):
    for doc in resources(overlay):
        if doc["kind"] == "Service":
            continue
        pod = doc["spec"]["template"]["spec"]
        ctr = container(doc)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["terminationGracePeriodSeconds"] >= 10
        # The probes ask the node's own health endpoints, on its --health-port.
        health = int(_arg(ctr["args"], "--health-port"))
        for kind, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = ctr[kind]["httpGet"]
            assert (get["path"], _port(ctr, get["port"])) == (path, health)
        if doc["kind"] == "Deployment":  # workers drain on SIGTERM, within the grace period
            drain = float(_arg(ctr["args"], "--drain-timeout"))
            assert 0 < drain <= pod["terminationGracePeriodSeconds"] - 5
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
        token = _arg(ctr["args"], "--token-file")
        folder, _, key = token.rpartition("/")
        assert volumes[mounts[folder]]["secret"]["secretName"] == "runtime-token"
        assert key == "token"
        env = {e["name"]: e.get("value") for e in ctr["env"]}
        assert env["RUNTIME_AUTH_TOKEN_FILE"] == token  # the probes' drivers read it
        if overlay == "tls":
            for name, file in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")):
                folder, _, key = env[f"RUNTIME_TLS_{name}"].rpartition("/")
                assert volumes[mounts[folder]]["secret"]["secretName"] == "runtime-tls"
                assert key == file


# --- the manifests' commands, run on simulated hosts -------------------------------------------

#: Paths of the pods, mapped into each simulated host's private /tmp.
PATHS = {
    "/etc/runtime/token/token": TOKEN_PATH,
    "/var/lib/runtime": f"{RUNTIME_TMP}/pv",
    "/etc/runtime/tls": "/tmp/tls",
}


def _provision_tls(hosts, where) -> None:
    """Make the runtime-tls Secret's files as docs/deploy.md says (a CA, one member
    certificate), and put them where each host mounts the Secret."""
    if shutil.which("openssl") is None:
        pytest.skip("the TLS overlay's run needs the openssl command")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=runtime-ca", "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=runtime-member",
            "-keyout", "tls.key", "-out", "member.csr")  # fmt: skip
    openssl("x509", "-req", "-in", "member.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-out", "tls.crt")  # fmt: skip
    for host in hosts:
        for name in ("ca.crt", "tls.crt", "tls.key"):
            data = (where / name).read_bytes()
            host.run("sh", "-c", f"mkdir -p /tmp/tls && cat > /tmp/tls/{name}", input=data)


def _local(text: str) -> str:
    for pod_path, host_path in PATHS.items():
        text = text.replace(pod_path, host_path)
    return text


def _entrypoint() -> list[str]:
    """The image's ENTRYPOINT, with this test's Python."""
    for line in (DEPLOY / "docker" / "Dockerfile").read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            argv = json.loads(line.removeprefix("ENTRYPOINT "))
            return [sys.executable if a == "python" else a for a in argv]
    raise AssertionError("the Dockerfile has no ENTRYPOINT")


def _pod_process(host, ctr: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    fields = {"status.podIP": host.ip, "metadata.name": f"runtime-worker-{host.name}"}
    env = {k: _local(v) for k, v in environment(ctr, fields).items()}
    return [*_entrypoint(), *(_local(expand(a, env)) for a in ctr["args"])], env


def _port(ctr: dict[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in ctr.get("ports", []) if p["name"] == port]
    return int(number)


def _probe(host, ctr: dict[str, Any], probe: dict[str, Any], env: dict[str, str]) -> int:
    """Run a probe of container ``ctr`` in ``host`` as the kubelet does (0: it passed)."""
    if "tcpSocket" in probe:
        port = _port(ctr, probe["tcpSocket"]["port"])
        code = f"import socket; socket.create_connection(('{host.ip}', {port}), timeout=5).close()"
        return host.exit_code(sys.executable, "-c", code, env=env)
    if "httpGet" in probe:  # the kubelet's rule: a status from 200 to 399 passes
        get = probe["httpGet"]
        url = f"http://{host.ip}:{_port(ctr, get['port'])}{get['path']}"
        code = (
            "import sys, urllib.request\n"
            f"try: sys.exit(not 200 <= urllib.request.urlopen({url!r}, timeout=5).status < 400)\n"
            "except OSError: sys.exit(1)"
        )
        return host.exit_code(sys.executable, "-c", code, env=env)
    argv = [sys.executable if a == "python" else a for a in probe["exec"]["command"]]
    return host.exit_code(*argv, env=env, timeout=probe.get("timeoutSeconds", 10) + 20)


def _until_probe_passes(host, ctr, probe, env, tries: int = 40) -> int:
    """Probe as the kubelet does, until the first success (bounded); the failures before it."""
    for failures in range(tries):
        if _probe(host, ctr, probe, env) == 0:
            return failures
        time.sleep(min(probe.get("periodSeconds", 10), 0.5))  # the kubelet's period, shortened
    raise AssertionError(f"the probe never passed on {host.name}\n{host.log_tail()}")


@pytest.mark.hosts
@pytest.mark.timeout(150)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_commands_make_a_cluster_across_hosts_whose_probes_pass(
    make_cluster, overlay, tmp_path
):
    cluster = make_cluster(4, head=False)
    h0, h1, h2, h3 = cluster.hosts
    cluster.net.resolve("runtime-head", h0.ip)  # the headless Service's DNS record
    if overlay == "tls":
        certs = tmp_path / "certs"
        certs.mkdir()
        _provision_tls(cluster.hosts, certs)
    docs = resources(overlay)
    head = container(find(docs, "StatefulSet", "runtime-head"))
    worker = container(find(docs, "Deployment", "runtime-worker"))
    argv, head_env = _pod_process(h0, head)
    h0.spawn("head-pod", *argv, env=head_env)
    envs = {}
    for host in (h1, h2):
        argv, envs[host.name] = _pod_process(host, worker)
        host.spawn("worker-pod", *argv, env=envs[host.name])
    _until_probe_passes(h0, head, head["livenessProbe"], head_env)
    _until_probe_passes(h0, head, head["readinessProbe"], head_env)
    for host in (h1, h2):
        _until_probe_passes(host, worker, worker["readinessProbe"], envs[host.name])
        assert _probe(host, worker, worker["livenessProbe"], envs[host.name]) == 0
    # A pod whose node processes do not run is neither ready nor live.
    _, idle_env = _pod_process(h3, worker)
    assert _probe(h3, worker, worker["readinessProbe"], idle_env) != 0
    assert _probe(h3, worker, worker["livenessProbe"], idle_env) != 0
    if overlay == "tls":  # the mesh really is TLS: a driver without the certificates fails
        plain = {k: v for k, v in envs["h1"].items() if not k.startswith("RUNTIME_TLS_")}
        plain_env = {**plain, **{k: "" for k in envs["h1"] if k.startswith("RUNTIME_TLS_")}}
        join = "import os, runtime; runtime.init(address=os.environ['RUNTIME_HEAD'])"
        assert h1.exit_code(sys.executable, "-c", join, env=plain_env, timeout=60) != 0
    procs = int(envs["h1"]["RUNTIME_PROCS"])
    tls = {k: v for k, v in idle_env.items() if k.startswith("RUNTIME_TLS_")}
    out = cluster.drive(h3, "members", env=tls, nodes=2 * procs)
    assert out["hosts"] == ["h1"] * procs + ["h2"] * procs
    assert out["head"] == [h0.ip]
    if overlay == "client":  # a driver outside the cluster's network, through the client port
        laptop = cluster.net.add_outside(h0)
        token = cluster.token.hex().encode()
        laptop.run("sh", "-c", f"umask 077 && cat > {TOKEN_PATH}", input=token)
        port = next(p["containerPort"] for p in head["ports"] if p["name"] == "client")
        via = f"runtime://{h0.ip}:{port}"
        assert cluster.drive(laptop, "members", via=via, nodes=2 * procs) == out
    # The head's state lives where the persistent volume is mounted.
    state = _local(_arg(head["args"], "--state-dir"))
    assert "head.sqlite" in h0.run("ls", state).split()
