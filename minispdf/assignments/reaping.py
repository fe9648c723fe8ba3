"""Nothing a submission starts outlives its grading.

The grader makes itself a child subreaper (Linux): a process that a worker's descendants leave
orphaned (a forked daemon, a double fork, ``setsid``) is re-parented to the grader instead of to
init, where the grader can see it. After each submission :meth:`Reaper.end` kills the worker's
whole tree and every such orphan, round after round until none is left (a process may fork while
it is being killed), and reaps them. Children the grader had before (the fork server that starts
workers) are left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal

from . import landlock

ROUNDS = 200  # at most this many kill-and-look-again rounds (RLIMIT_NPROC bounds a fork bomb)


def _parents() -> dict[int, int]:
    """Every process's parent, from /proc (empty where there is no /proc)."""
    parents = {}
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError,
                                         IndexError), open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
                    # after "(comm) S"
                    parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    return parents


def _tree(roots: set[int], parents: dict[int, int]) -> set[int]:
    """``roots`` and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [r for r in roots if r in parents]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


class Reaper:
    """Made before the first worker starts: remembers the grader's own children."""

    def __init__(self):
        self.was_subreaper = landlock.is_subreaper()
        self.subreaper = landlock.become_subreaper()
        me = os.getpid()
        self.known = {pid for pid, parent in _parents().items() if parent == me}

    def end(self, worker: int | None, own_child: bool = False) -> int:
        """Kill ``worker``'s tree and every orphan re-parented here since; reap the orphans. Returns
        how many processes were killed. ``own_child``: the worker is the grader's own child (its
        ``multiprocessing`` handle reaps it)."""
        me, killed = os.getpid(), set()
        for _ in range(ROUNDS):
            parents = _parents()
            strays = {pid for pid, parent in parents.items()
                      if parent == me and pid not in self.known}
            doomed = _tree(strays | ({worker} if worker else set()), parents) - {me}
            alive = {pid for pid in doomed if not _zombie(pid)}
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            for pid in strays - ({worker} if own_child else set()):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
            killed |= alive
            if not alive and not strays:
                break
        return len(killed - {worker})


    def close(self) -> None:
        """After the last submission: reap what is left, and stop being a subreaper unless this
        process was one before (a notebook or test that graded in-process would otherwise adopt,
        and never reap, every orphan of its later children)."""
        self.end(None)
        if self.subreaper and not self.was_subreaper:
            landlock.become_subreaper(False)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] in (b"Z", b"X")
    except (OSError, ValueError):
        return True
