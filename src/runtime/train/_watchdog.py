"""The watchdog's judgement: from the ranks' Python stacks, which rank hangs the others.

A collective (all-reduce, broadcast, barrier, DDP's gradient sync in ``backward``) returns
only when every rank has entered it. When ranks stop reporting, the ones whose loop thread
sits inside ``torch.distributed`` (or autograd, where DDP waits for its all-reduce) are
waiting; a rank that is anywhere else (in user code, in I/O, in a data loader) is the one
they wait for. Pure functions of the stacks, so they are tested without a cluster.
"""

from __future__ import annotations

#: Stack frames (file path fragments) that mean "waiting in a collective".
_COLLECTIVE_FILES = (
    "torch/distributed/",
    "torch/nn/parallel/distributed.py",
    "torch/autograd/__init__.py",  # backward(), where DDP's all-reduce completes
    "torch/autograd/graph.py",
    "torch/_tensor.py",  # Tensor.backward
)


def in_collective(stack: str) -> bool:
    """Whether a formatted stack's innermost frames are in ``torch.distributed`` or in a
    backward pass (not while a module is being imported)."""
    frames = [line for line in stack.splitlines() if line.lstrip().startswith("File ")]
    if any("importlib._bootstrap" in line for line in frames):
        return False  # importing torch, say: slow, but no collective
    inner = frames[-4:]  # the collective call and what it calls
    return any(part in line for line in inner for part in _COLLECTIVE_FILES)


def _innermost(stack: str) -> str:
    lines = [line.strip() for line in stack.splitlines() if line.strip()]
    return " | ".join(lines[-2:]) if lines else "(no stack: the loop thread is not running)"


def diagnose(  # noqa: PLR0917 - one value per aspect of the ranks, all required
    quiet: list[int],
    stacks: dict[int, str],
    names: dict[int, str],
    hosts: dict[int, str],
    silent_for: dict[int, float],
    timeout: float,
) -> str:
    """One warning: which ranks are quiet, which of them hold up a collective, their stacks.

    ``quiet``: the ranks that have not reported for ``timeout`` seconds; ``stacks``,
    ``names``, ``hosts``, ``silent_for``: per live rank.
    """
    waiting = [r for r, s in stacks.items() if s and in_collective(s)]
    elsewhere = [r for r, s in stacks.items() if s and not in_collective(s)]
    parts = []
    if waiting and elsewhere:
        blocked = ", ".join(str(r) for r in sorted(waiting))
        for rank in sorted(elsewhere):
            parts.append(
                f"{names[rank]} on host {hosts[rank]} has not reported for "
                f"{silent_for[rank]:.1f} s (report_timeout_s={timeout:g}) and is not in a "
                f"collective while rank(s) {blocked} wait in one: it hangs them. "
                f"Its stack:\n{stacks[rank]}"
            )
        for rank in sorted(waiting):
            parts.append(f"{names[rank]} waits in: {_innermost(stacks[rank])}")
    else:
        for rank in sorted(quiet):
            where = "in a collective" if rank in waiting else "not in a collective"
            parts.append(
                f"{names[rank]} on host {hosts[rank]} has not reported for "
                f"{silent_for[rank]:.1f} s (report_timeout_s={timeout:g}); it may be hung "
                f"({where}). Its stack:\n{stacks.get(rank) or '(not available)'}"
            )
    return "\n".join(parts)
