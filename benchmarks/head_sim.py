"""One real head against many simulated members: the head's CPU and memory per member.

Each member has its own TCP connection through the runtime's transport (the real handshake
and framing), registers, beats at the heartbeat interval, reports resources every few
seconds and reads the views the head pushes; ``--churn`` members a second leave and as many
join. See runtime.core.tools.head_sim and docs/performance.md.

    .venv/bin/python benchmarks/head_sim.py --members 2000 --procs 4 --churn 100
"""

from __future__ import annotations

import argparse
import json
import os

from runtime.core.tools import head_sim


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=2000)
    ap.add_argument("--procs", type=int, default=4, help="simulating processes")
    ap.add_argument("--seconds", type=float, default=20.0, help="steady window after joining")
    ap.add_argument("--churn", type=float, default=100.0, help="leaves (and joins) a second")
    ap.add_argument(
        "--stop", type=int, default=20, help="members that stop beating once joined (detected?)"
    )
    ap.add_argument("--report-every", type=float, default=5.0, help="s between a member's reports")
    ap.add_argument(
        "--head-pythonpath",
        help="PYTHONPATH of the head alone (another checkout's src: the same members against "
        "another head, in one window)",
    )
    args = ap.parse_args()
    out = head_sim.run(args.members, args.procs, args.seconds, args.churn, args.report_every,
                       stop=args.stop, head_path=args.head_pythonpath)  # fmt: skip
    out["load average at the end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
