"""A remote driver (``runtime.init("runtime://HEAD:CLIENT_PORT")``) on a host outside the
cluster's network, which reaches the head's host alone: everything goes through the head's
client port."""

from __future__ import annotations

import pytest

from .harness import CLIENT_PORT, TOKEN_PATH

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(120)]


def test_a_driver_that_reaches_only_the_head_runs_tasks_actors_and_objects_through_it(
    make_cluster,
):
    cluster = make_cluster(3, head=False)
    h0, h1, h2 = cluster.hosts
    cluster.start_head("--client-port", str(CLIENT_PORT))
    cluster.start_node(h1, resources={"h1": 1})
    cluster.start_node(h2, resources={"h2": 1})
    laptop = cluster.net.add_outside(h0)
    laptop.run("sh", "-c", f"umask 077 && cat > {TOKEN_PATH}", input=cluster.token.hex().encode())
    address = f"runtime://{h0.ip}:{CLIENT_PORT}"
    out = cluster.drive(laptop, "remote_driver", via=address, nodes=2, mb=10)
    assert out["driver_host"] == "laptop"
    assert out["reachable"] == {"h1": False, "h2": False}  # the nodes are out of its reach
    expected = out["expected"]
    assert out["read_put"] == [[expected, "h1"], [expected, "h2"]]  # 10 MB put here, read there
    assert out["got"] == [expected, 10 << 20]  # 10 MB made on h1, read here
    assert out["actor"] == ["h2", [11, 13]]
    # h2 got the ref from h1 (the driver never called h2): h2 reached the driver's object
    # through the relay's port for the driver.
    assert out["nested"] == [out["nested_expected"], "h2"]
    assert out["error"] == {  # raised on a node, caught here by its own type
        "caught_as": "RemoteFailure",
        "is_value_error": True,
        "last_line": "RemoteFailure: bad input",
    }
