"""TLS on the mesh: members with certificates from the cluster CA talk; others do not."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..conftest import start_head, stop_process

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(where: Path) -> dict[str, str]:
    """A throwaway cluster CA and one member certificate it signs, made with openssl."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "1", "-subj", "/CN=runtime-test-ca", cwd=where)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "member.key", "-out",
             "member.csr", "-subj", "/CN=member", cwd=where)  # fmt: skip
    _openssl("x509", "-req", "-in", "member.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "member.pem", "-days", "1", cwd=where)  # fmt: skip
    return {
        "RUNTIME_TLS_CERT": str(where / "member.pem"),
        "RUNTIME_TLS_KEY": str(where / "member.key"),
        "RUNTIME_TLS_CA": str(where / "ca.pem"),
    }


DRIVER = """
    import runtime
    runtime.init(address={address!r}, token=bytes.fromhex({token!r}))

    @runtime.remote
    def f(x):
        return x * 2

    print("resources", runtime.cluster_resources())
    print("result", runtime.get([f.remote(i) for i in range(4)], timeout=30))
    runtime.shutdown()
"""


def test_members_with_certificates_from_the_cluster_ca_form_a_mesh(tmp_path: Path) -> None:
    tls = make_certificates(tmp_path)
    head = start_head(
        tmp_path, "--tls-cert", tls["RUNTIME_TLS_CERT"], "--tls-key", tls["RUNTIME_TLS_KEY"],
        "--tls-ca", tls["RUNTIME_TLS_CA"],
    )  # fmt: skip
    node = head.start_node(
        "--tls-cert", tls["RUNTIME_TLS_CERT"], "--tls-key", tls["RUNTIME_TLS_KEY"],
        "--tls-ca", tls["RUNTIME_TLS_CA"],
    )  # fmt: skip
    try:
        code = textwrap.dedent(DRIVER.format(address=head.address, token=head.token.hex()))
        env = {**head.env, **tls}
        for _ in range(100):  # until the node has joined (bounded)
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, timeout=60, check=False)  # fmt: skip
            assert out.returncode == 0, out.stderr
            if "'CPU': 2.0" in out.stdout:
                break
        assert "'CPU': 2.0" in out.stdout, out.stdout
        assert "result [0, 2, 4, 6]" in out.stdout

        # Without TLS, the token alone does not get in.
        plain = {k: v for k, v in head.env.items() if not k.startswith("RUNTIME_TLS_")}
        refused = subprocess.run([sys.executable, "-c", code], env=plain, capture_output=True,
                                 text=True, timeout=60, check=False)  # fmt: skip
        assert refused.returncode != 0
        assert head.proc.poll() is None
    finally:
        stop_process(node)
        stop_process(head.proc)
