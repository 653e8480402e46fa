"""What tasks and actors print reaches the driver, tagged, and stays in the node's log file."""

from __future__ import annotations

import glob
import os
import sys
import time

import pytest

import runtime

pytestmark = pytest.mark.timeout(60)


@runtime.remote
def shout(word):
    print(f"task says {word}")
    print(f"task warns {word}", file=sys.stderr)
    return os.getpid()


@runtime.remote
class Speaker:
    def say(self, word):
        print(f"actor says {word}")
        return os.getpid()


def wait_for_output(capsys, *needles, timeout=20.0):
    seen_out, seen_err = "", ""
    deadline = time.monotonic() + timeout
    while True:
        captured = capsys.readouterr()
        seen_out += captured.out
        seen_err += captured.err
        if all(n in seen_out + seen_err for n in needles):
            return seen_out, seen_err
        assert time.monotonic() < deadline, f"never printed: {needles}; got {seen_out!r}"
        time.sleep(0.05)


def test_output_is_forwarded_with_a_prefix(cluster, capsys):
    pid = runtime.get(shout.remote("hi"))
    out, err = wait_for_output(capsys, "task says hi", "task warns hi")
    assert f"(shout pid={pid}) task says hi" in out
    assert f"(shout pid={pid}) task warns hi" in err
    speaker = Speaker.remote()
    apid = runtime.get(speaker.say.remote("hello"))
    out, _ = wait_for_output(capsys, "actor says hello")
    assert f"(Speaker pid={apid}) actor says hello" in out


def test_output_is_kept_in_the_node_log(cluster):
    runtime.get(shout.remote("kept"))
    pattern = os.path.join(cluster["session_dir"], "logs", "worker-*.log")
    deadline = time.monotonic() + 20
    while True:
        text = ""
        for path in glob.glob(pattern):
            with open(path) as f:
                text += f.read()
        if "task says kept" in text:
            break
        assert time.monotonic() < deadline, f"no log line in {pattern}"
        time.sleep(0.05)
