"""Objects between hosts: a read on another host is kept there, and a broadcast fetches from
the hosts that already hold a copy, not all from the one that made it."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(120)]


def test_a_read_on_another_host_is_kept_there_and_a_broadcast_fetches_from_the_copies(
    make_cluster,
):
    cluster = make_cluster(6)
    readers = ["h3", "h4", "h5"]
    for host in cluster.hosts[1:]:
        cluster.start_node(host, resources={host.name: 1})
    out = cluster.drive(cluster.hosts[0], "copies_between_hosts", nodes=5, mb=16, readers=readers)
    size = out["nbytes"]
    first, second = out["first"], out["second"]
    assert first["host"] == second["host"] == "h2"
    assert first["sum"] == second["sum"] == out["expected"]
    assert first["kept"] is True  # h2 keeps what it streamed from h1...
    # ...so its second read streamed nothing: h1 sent the object once (a blob: the array and
    # a header of a few hundred bytes).
    assert round(out["h1_after_two"] / size, 3) == 1.0
    assert [r["sum"] for r in out["broadcast"]] == [out["expected"]] * len(readers)
    assert all(r["kept"] for r in out["broadcast"])
    # The broadcast to three more hosts at once: each read streamed the object once, and
    # not all from h1 (h1 then h2 streamed to one reader each while the third waited for a
    # copy to finish, then fetched from whichever was free).
    whole = {h: round(v / size, 3) for h, v in out["served"].items()}
    assert sum(whole.values()) == 4.0, whole
    assert whole["h1"] <= 2.0, whole  # h2's first read, and one reader of the broadcast
    assert sum(v for h, v in whole.items() if h != "h1") >= 2.0, whole  # the others: copies
