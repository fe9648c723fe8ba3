"""How a submission's worker is confined, and how the grader cleans up after it.

Each submission's worker (see :mod:`.worker`) calls :func:`confine` before any student code runs:
a new session and process group, stdin/stdout/stderr on /dev/null and every other inherited file
descriptor closed except its result channel, a scrubbed environment, a private working folder,
and resource limits (address space, CPU time, file size, open files, processes, no core files).
Then the strongest confinement the machine offers (:func:`confinement`):

* ``root`` (the grader runs as root): the worker ``chroot``s into its private folder (it sees no
  other file) and drops to a fresh uid/gid that no account and no process uses (so it cannot
  signal the grader, and with ``RLIMIT_NPROC`` 1 cannot start a process or a thread); after the
  worker the grader kills whatever still runs as that uid and removes what it left in the temp
  folders. Landlock on top, where the kernel has it.
* ``landlock`` (an ordinary user on Linux >= 5.13, :mod:`.landlock`): the worker may read only
  the Python installation and the kit, write only its private folder; no TCP; it cannot signal
  or ptrace a process outside its domain (the grader, the user's other programs), nor reach their
  abstract unix sockets. ``RLIMIT_NPROC``: the user's processes now plus a few.
* none (another system, an old kernel, Landlock disabled): :func:`prepare` refuses to run
  student code unless the instructor passed ``--unconfined``.

Whatever it is, the grader is a child subreaper and ends the worker's whole tree, and any orphan
it left, after each submission (:mod:`.reaping`). Not confined: CPU and memory bandwidth, the
kernel; with Landlock only, UDP and unix sockets that have a path.
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
import sys
import tempfile
from dataclasses import dataclass

from ..errors import MiniSPDFError
from . import landlock

# bytes of address space a worker may add to what it starts with (torch is mapped already)
MEMORY = 1 << 30
FILE_SIZE = 16 << 20  # bytes: the largest file a worker may write
OPEN_FILES = 256  # file descriptors a worker may hold
# without root: processes (threads) the worker's user may add to what it runs already
NPROC_MARGIN = 32
UID_RANGE = (1 << 24, 1 << 30)  # fresh uids are drawn from here: far above any account's
# world-writable: cleaned of what the fresh uid left
TEMP_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")
# read-only: what a lazy import may load
SHARED_LIBRARIES = ("/lib", "/lib64", "/usr/lib", "/usr/lib64")
UNCONFINED_NOTE = "unconfined"


@dataclass(frozen=True)
class Sandbox:
    folder: str  # the worker's private working folder (owned by uid, 0700)
    uid: int | None  # the fresh uid and gid it runs as; None: not root, the grader's own user
    cpu: int  # seconds of CPU time for the worker (and anything it starts)
    landlock: int = 0  # the Landlock ABI the worker restricts itself with; 0: none
    reads: tuple = ()  # with Landlock: what the worker may read (and execute) besides its folder
    unconfined: bool = False  # --unconfined: no chroot, no user switch, no Landlock
    memory: int = MEMORY
    file_size: int = FILE_SIZE

    @property
    def kind(self) -> str:
        if self.unconfined:
            return UNCONFINED_NOTE
        if self.uid is not None:
            return ("root: uid drop + chroot"
                    + (f" + Landlock ABI {self.landlock}" if self.landlock else ""))
        return f"user: Landlock ABI {self.landlock}"

    def describe(self) -> str:
        """One line for the output and the CSV's notes column: what confined this submission."""
        if self.unconfined:
            return (f"{UNCONFINED_NOTE}: ran with the grader's own rights (--unconfined); "
                    f"own session, "
                    f"limits: memory +{self.memory >> 20} MiB, CPU {self.cpu} s")
        who = (f"fresh uid {self.uid}, chroot to a private folder, no new processes"
               if self.uid is not None
               else "the grader's own user; reads only Python and the kit, writes only a "
                    "private folder, "
                    "no TCP, no signals out")
        return (f"confinement {self.kind} ({who}); own session, no stdio or inherited "
                f"files; limits: "
                f"memory +{self.memory >> 20} MiB, CPU {self.cpu} s, files "
                f"{self.file_size >> 20} MiB, "
                f"{OPEN_FILES} open files")


def confinement() -> tuple[str | None, int, str]:
    """``(kind, landlock ABI, why none)``: kind "root", "landlock", or None where this machine
    offers the grader no confinement (then ``why`` says so)."""
    version, why = landlock.abi()
    if hasattr(os, "geteuid") and os.geteuid() == 0 and sys.platform.startswith("linux"):
        return "root", version, ""
    return ("landlock" if version else None), version, why


def _readable() -> tuple:
    """What a worker confined by Landlock may read: the interpreter, its standard library and
    site-packages, the kit, the system's shared libraries, /dev/null (not the kit's parent folder:
    a source checkout holds the solutions)."""
    import site

    kit = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, kit, os.devnull,
             *site.getsitepackages(), *SHARED_LIBRARIES]
    return tuple(dict.fromkeys(os.path.realpath(p) for p in paths))


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


def require(unconfined: bool = False) -> tuple[str | None, int]:
    """``(kind, landlock ABI)`` of :func:`confinement`; one line of error where there is none and
    the instructor did not pass ``--unconfined``."""
    kind, version, why = confinement()
    if kind is None and not unconfined:
        raise MiniSPDFError(f"cannot confine student code on this machine ({why}), so the "
                            f"grader runs none: "
                            "grade as root or on Linux >= 5.13 with Landlock, or pass "
                            "--unconfined to run it "
                            "with your own user's rights")
    return kind, version


def prepare(cpu_seconds: float, unconfined: bool = False) -> Sandbox:
    """A private folder and the confinement to use: as root a fresh uid that owns the folder (and
    Landlock where the kernel has it), else Landlock; refused where there is neither, unless
    ``unconfined``."""
    kind, version = require(unconfined)
    uid = fresh_uid() if kind == "root" and not unconfined else None
    # as root under /tmp: the grader's own TMPDIR may be a folder the fresh uid cannot enter
    folder = tempfile.mkdtemp(prefix="minispdf-grade-",
                              dir="/tmp" if uid is not None and os.path.isdir("/tmp") else None)
    if uid is not None:
        os.chown(folder, uid, uid)
    return Sandbox(folder=folder, uid=uid, cpu=max(1, int(cpu_seconds) + 1),
                   unconfined=kind is None or unconfined,
                   landlock=0 if unconfined else version,
                   reads=() if unconfined or not version else _readable())


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _tasks_of(uid: int) -> int:
    """Processes and threads running as ``uid`` (what ``RLIMIT_NPROC`` counts)."""
    count = 0
    for pid in _processes_of(uid):
        with contextlib.suppress(OSError):
            count += len(os.listdir(f"/proc/{pid}/task"))
    return count


def _limits(box: Sandbox, keep_fd: int) -> None:
    # a too-large write fails (EFBIG) instead of killing
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = _vm_size() + box.memory
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CPU, (box.cpu, box.cpu + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (box.file_size, box.file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    files = max(OPEN_FILES, keep_fd + 1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    if box.uid is None and not box.unconfined and os.getuid() != 0:  # root ignores RLIMIT_NPROC
        # per user: the user's other programs count too
        procs = _tasks_of(os.getuid()) + NPROC_MARGIN
        resource.setrlimit(resource.RLIMIT_NPROC, (procs, procs))


def confine(box: Sandbox, keep_fd: int) -> None:
    """In the worker, before any student code: everything the module docstring lists. Raises if
    the user switch or Landlock did not take (the worker then reports it and runs nothing)."""
    os.setsid()  # its own session and process group: the grader kills the group
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, keep_fd)  # the grader's pipes, files and sockets that came with the fork
    os.closerange(keep_fd + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    _limits(box, keep_fd)
    os.chdir(box.folder)
    rules = (landlock.ruleset(box.landlock, reads=box.reads, writes=[box.folder]) if box.landlock
             else None)
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
    if rules is not None:
        landlock.restrict_self(rules)


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
    """Remove the private folder and, for a fresh uid, what it left in the world-writable temp
    folders."""
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
