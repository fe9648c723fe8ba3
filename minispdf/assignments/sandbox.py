"""How a submission's worker is confined, and how the grader cleans up after it.

Each submission's worker (see :mod:`.worker`) calls :func:`confine` before any student code runs:
a new session and process group (the grader kills the whole group), stdin/stdout/stderr on
/dev/null and every other inherited file descriptor closed except its result channel, a scrubbed
environment, a private working folder, and resource limits (address space, CPU time, file size,
no core files). When the grader runs as root the worker also ``chroot``s into its private folder
(it sees no other file) and drops to a fresh uid/gid that no account and no process uses (so it
cannot signal the grader, and with ``RLIMIT_NPROC`` 1 cannot start a process or a thread); after
the worker the grader kills whatever still runs as that uid and removes what it left in the temp
folders. It can import only modules loaded before (see :func:`.worker.warm`). Not confined: CPU
and memory bandwidth, the kernel; and without root there is no chroot and no user switch: the
worker runs as the grader's own user, which can read and write what the grader can and signal
its processes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import grp
import random
import resource
import shutil
import signal
import tempfile
from dataclasses import dataclass

MEMORY = 1 << 30  # bytes of address space a worker may add to what it starts with (torch is mapped already)
FILE_SIZE = 16 << 20  # bytes: the largest file a worker may write
UID_RANGE = (1 << 24, 1 << 30)  # fresh uids are drawn from here: far above any account's
TEMP_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable: cleaned of what the fresh uid left


@dataclass(frozen=True)
class Sandbox:
    folder: str  # the worker's private working folder (owned by uid, 0700)
    uid: int | None  # the fresh uid and gid it runs as; None: not root, the grader's own user
    cpu: int  # seconds of CPU time for the worker (and anything it starts)
    memory: int = MEMORY
    file_size: int = FILE_SIZE

    def describe(self) -> str:
        """One line for the CSV's notes column: what confined this submission."""
        who = (f"as fresh uid {self.uid} (no account; no new processes), chroot to a private folder"
               if self.uid is not None else "as the grader's own user (not root: no user switch, no chroot), "
                                            "private working folder")
        return (f"sandbox: own process group, {who}, no stdio or inherited files; limits: "
                f"memory +{self.memory >> 20} MiB, CPU {self.cpu} s, files {self.file_size >> 20} MiB")


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
    return pids


def _owned(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return bool(_processes_of(uid))


def fresh_uid() -> int:
    """A uid (and gid) that no account, group or process uses."""
    draw = random.SystemRandom()
    for _ in range(50):
        uid = draw.randrange(*UID_RANGE)
        if not _owned(uid):
            return uid
    raise RuntimeError("found no unused uid to run the submission as")


def prepare(cpu_seconds: float) -> Sandbox:
    """A private folder and, when the grader is root, a fresh uid that owns it."""
    uid = fresh_uid() if os.geteuid() == 0 else None
    # as root under /tmp: the grader's own TMPDIR may be a folder the fresh uid cannot enter
    folder = tempfile.mkdtemp(prefix="minispdf-grade-", dir="/tmp" if uid is not None and os.path.isdir("/tmp") else None)
    if uid is not None:
        os.chown(folder, uid, uid)
    return Sandbox(folder=folder, uid=uid, cpu=max(1, int(cpu_seconds) + 1))


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def confine(box: Sandbox, keep_fd: int) -> None:
    """In the worker, before any student code: everything the module docstring lists. Raises if
    the user switch did not take (the worker then reports it and runs nothing)."""
    os.setsid()  # its own session and process group: the grader kills the group
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, keep_fd)  # the grader's pipes, files and sockets that came with the fork
    os.closerange(keep_fd + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails (EFBIG) instead of killing
    limit = _vm_size() + box.memory
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (box.cpu, box.cpu + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (box.file_size, box.file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(box.folder)
    home = box.folder
    if box.uid is not None:  # root: the private folder becomes the whole file system it sees
        os.chroot(box.folder)
        os.chdir("/")
        home = "/"
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
    os.environ.clear()
    os.environ.update(keep, HOME=home, TMPDIR=home)
    tempfile.tempdir = home
    os.umask(0o077)
    if box.uid is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (1, 1))  # this process only: no fork, no thread
        os.setgroups([])
        os.setresgid(box.uid, box.uid, box.uid)
        os.setresuid(box.uid, box.uid, box.uid)
        if os.getresuid() != (box.uid,) * 3 or os.getresgid() != (box.uid,) * 3:
            raise RuntimeError("the switch to an unprivileged user did not take")


def _kill(pid_or_group: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid_or_group, signal.SIGKILL)


def stop(box: Sandbox, pid: int | None) -> None:
    """Kill the worker's process group, and everything running as its uid."""
    if pid:
        _kill(pid, group=True)
    if box.uid is not None:
        for _ in range(20):  # a process may start another while we look: look again
            pids = _processes_of(box.uid)
            if not pids:
                break
            for p in pids:
                _kill(p, group=False)


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def clean_up(box: Sandbox) -> None:
    """Remove the private folder and, for a fresh uid, what it left in the world-writable temp folders."""
    stop(box, None)
    shutil.rmtree(box.folder, ignore_errors=True)
    if box.uid is None:
        return
    for top in TEMP_FOLDERS:
        with contextlib.suppress(OSError), os.scandir(top) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid == box.uid:
                        _remove(entry.path)
