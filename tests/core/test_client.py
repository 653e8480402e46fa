"""Remote drivers through the head's client port (``--client-port``), on loopback: the token
is checked before anything is relayed, the relay dials members only, TLS runs end to end
through it, and a Ray program reaches it with ``ray://`` through ``runtime.compat``."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.core.client.tunnel import RelayTunnel, open_tunnel, relay_address
from runtime.exceptions import AuthenticationError

from ..conftest import HeadProcess, start_head, stop_process, until
from .test_tls import make_certificates

pytestmark = pytest.mark.timeout(90)

DRIVER = """
    import sys
    import runtime

    info = runtime.init(address=sys.argv[1], token=bytes.fromhex(sys.argv[2]))

    @runtime.remote
    def f(x):
        return x * 2

    @runtime.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n

    c = Counter.remote()
    print("result", runtime.get([f.remote(i) for i in range(4)], timeout=30),
          runtime.get([c.add.remote(1), c.add.remote(2)], timeout=30))
    print("address", info["address"])
    runtime.shutdown()
"""


def client_address(head: HeadProcess) -> str:
    """The ``runtime://`` address the head's log announces."""
    pattern = re.compile(r"runtime\.init\('(runtime://[^']+)'\)")
    until(lambda: pattern.search(head.log()) is not None, 30, head.log)
    found = pattern.search(head.log())
    assert found is not None
    return found.group(1)


def run_driver(head: HeadProcess, address: str, env: dict[str, str] | None = None) -> str:
    code = textwrap.dedent(DRIVER)
    out = subprocess.run(
        [sys.executable, "-c", code, address, head.token.hex()],
        env={**head.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def relay_head(tmp_path_factory: pytest.TempPathFactory):
    head = start_head(tmp_path_factory.mktemp("client"), "--num-cpus", "1", "--client-port", "0")
    try:
        yield head
    finally:
        stop_process(head.proc)


def test_a_remote_driver_runs_tasks_and_actors_through_the_client_port(relay_head):
    out = run_driver(relay_head, client_address(relay_head))
    assert "result [0, 2, 4, 6] [1, 3]" in out
    assert f"address {relay_head.address}" in out  # it joined the head's mesh, relayed


def test_a_wrong_token_is_refused_before_anything_is_relayed(relay_head):
    host, port = relay_address(client_address(relay_head))
    with pytest.raises(AuthenticationError, match="wrong cluster token"):
        asyncio.run(open_tunnel(f"runtime://{host}:{port}", b"not the token" * 3))


def test_the_relay_dials_only_members_of_the_cluster(relay_head):
    host, port = relay_address(client_address(relay_head))

    async def dial(target: str) -> None:
        target_host, _, target_port = target.rpartition(":")
        sock = await RelayTunnel(host, port, relay_head.token).dial(target_host, int(target_port))
        sock.close()

    asyncio.run(dial(relay_head.address))  # the head itself: relayed
    with pytest.raises(ConnectionError, match="is not a member of this cluster"):
        asyncio.run(dial(f"{host}:22"))


def test_an_address_that_is_not_a_client_port_says_so(relay_head):
    with pytest.raises(ValueError, match=r"runtime://HOST:PORT"):
        relay_address("runtime://nohost")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_remote_driver_speaks_tls_end_to_end_through_the_relay(tmp_path: Path):
    tls = make_certificates(tmp_path)
    flags = ["--tls-cert", tls["RUNTIME_TLS_CERT"], "--tls-key", tls["RUNTIME_TLS_KEY"],
             "--tls-ca", tls["RUNTIME_TLS_CA"]]  # fmt: skip
    head = start_head(tmp_path, "--num-cpus", "1", "--client-port", "0", *flags)
    try:
        address = client_address(head)
        out = run_driver(head, address, env=tls)
        assert "result [0, 2, 4, 6] [1, 3]" in out
        # Without its certificate the driver gets past the relay (the token) but not into
        # the mesh: TLS is end to end, the relay only passes bytes.
        code = textwrap.dedent(DRIVER)
        refused = subprocess.run([sys.executable, "-c", code, address, head.token.hex()],
                                 env=head.env, capture_output=True, text=True, timeout=60,
                                 check=False)  # fmt: skip
        assert refused.returncode != 0
        assert head.proc.poll() is None
    finally:
        stop_process(head.proc)


def test_a_ray_program_reaches_the_cluster_with_ray_scheme_through_compat(relay_head, tmp_path):
    script = tmp_path / "ray_program.py"
    script.write_text(
        textwrap.dedent("""
            import sys
            import ray

            ray.init(sys.argv[1])

            @ray.remote
            def square(x):
                return x * x

            print("squares", ray.get([square.remote(i) for i in range(3)]))
            ray.shutdown()
        """)
    )
    ray_address = client_address(relay_head).replace("runtime://", "ray://")
    env = {**relay_head.env, "RUNTIME_AUTH_TOKEN": relay_head.token.hex()}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "runtime.compat", str(script), ray_address],
                         env=env, capture_output=True, text=True, timeout=60,
                         check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "squares [0, 1, 4]" in out.stdout


def test_a_drivers_relayed_port_closes_when_the_driver_leaves(relay_head):
    async def register_then_leave() -> str:
        tunnel = await open_tunnel(client_address(relay_head), relay_head.token)
        assert tunnel.head_address == relay_head.address
        host, _, port = tunnel.address.rpartition(":")
        socket.create_connection((host, int(port)), timeout=5).close()  # members reach it
        tunnel.close()
        return tunnel.address

    address = asyncio.run(register_then_leave())
    host, _, port = address.rpartition(":")

    def closed() -> bool:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    until(closed, 10)
