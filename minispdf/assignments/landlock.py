"""Landlock through ctypes: the Linux sandbox an unprivileged process puts itself in.

Landlock (kernel >= 5.13, no root, nothing to install) lets a process give up, for itself and
every process it starts, all file access but what a ruleset allows beneath a few folders; from
ABI 4 on also TCP bind and connect, from ABI 6 on signals to, and abstract unix sockets of,
processes outside its domain. A process in a domain cannot ptrace one outside it. The grader's
worker uses it (:func:`.sandbox.confine`) before any student code runs.

Only three system calls, the same numbers on every Linux architecture since 5.1:
``landlock_create_ruleset`` (444), ``landlock_add_rule`` (445), ``landlock_restrict_self`` (446).
"""

from __future__ import annotations

import ctypes
import os
import sys

CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1  # flag: return the ABI version instead of a ruleset
RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37

# file system rights (include/uapi/linux/landlock.h)
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
# the only ones a rule on a file may hold
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = EXECUTE | READ_FILE | READ_DIR
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def abi() -> tuple[int, str]:
    """``(version, "")`` of the kernel's Landlock ABI, or ``(0, why there is none)``."""
    if not sys.platform.startswith("linux"):
        return 0, f"Landlock is Linux's, and this is {sys.platform}"
    try:
        libc = _libc()
        version = libc.syscall(CREATE_RULESET, None, ctypes.c_size_t(0),
                               ctypes.c_uint32(CREATE_RULESET_VERSION))
    except (OSError, AttributeError) as e:
        return 0, f"the C library cannot make system calls ({e})"
    if version > 0:
        return int(version), ""
    err = ctypes.get_errno()
    if err == 38:  # ENOSYS
        return 0, f"the kernel ({os.uname().release}) has no Landlock: it needs Linux >= 5.13"
    if err == 95:  # EOPNOTSUPP
        return 0, ("Landlock is built into the kernel but not enabled (add landlock to the lsm= "
                   "boot option)")
    return 0, f"Landlock is not usable ({os.strerror(err)})"


def fs_rights(version: int) -> int:
    """Every file system right ABI ``version`` knows (all are handled: what no rule allows is
    denied)."""
    rights = (1 << 13) - 1
    for since, right in ((2, REFER), (3, TRUNCATE), (5, IOCTL_DEV)):
        if version >= since:
            rights |= right
    return rights


def ruleset(version: int, reads=(), writes=()) -> int:
    """A ruleset (its file descriptor) that denies every file right but reading and executing
    beneath ``reads`` and everything beneath ``writes`` (folders or files), every TCP bind and
    connect (ABI >= 4), and signals and abstract unix sockets outside the domain (ABI >= 6).
    Paths that do not exist are skipped. Enforce it with :func:`restrict_self`."""
    libc, handled = _libc(), fs_rights(version)
    attr = _RulesetAttr(handled_access_fs=handled,
                        handled_access_net=NET_BIND_TCP | NET_CONNECT_TCP if version >= 4 else 0,
                        scoped=SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if version >= 6 else 0)
    fd = _check(libc.syscall(CREATE_RULESET, ctypes.byref(attr),
                             ctypes.c_size_t(ctypes.sizeof(attr)),
                             ctypes.c_uint32(0)), "landlock_create_ruleset")
    try:
        for paths, access in ((reads, READ & handled), (writes, handled)):
            for path in paths:
                _allow(libc, fd, path, access)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _allow(libc, fd: int, path: str, access: int) -> None:
    try:
        target = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not os.path.isdir(path):
            access &= FILE_RIGHTS
        rule = _PathBeneath(allowed_access=access, parent_fd=target)
        _check(libc.syscall(ADD_RULE, ctypes.c_int(fd), ctypes.c_int(RULE_PATH_BENEATH),
                            ctypes.byref(rule),
                            ctypes.c_uint32(0)), f"landlock_add_rule {path}")
    finally:
        os.close(target)


def no_new_privileges() -> None:
    """No execve can ever raise this process's privileges again (setuid files, file
    capabilities)."""
    _check(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def restrict_self(fd: int) -> None:
    """Put this process (and all it starts from now on) into ruleset ``fd``'s domain, for good."""
    no_new_privileges()
    try:
        _check(_libc().syscall(RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(fd)


def become_subreaper(on: bool = True) -> bool:
    """Make this process the child subreaper of its descendants (``on``; or stop being one): an
    orphan among them is re-parented here (not to init), so the grader can find and end it. False
    where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return _libc().prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def is_subreaper() -> bool:
    """Whether this process already is a child subreaper (False where unsupported)."""
    if not sys.platform.startswith("linux"):
        return False
    flag = ctypes.c_int(0)
    try:
        return (_libc().prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0
                and bool(flag.value))
    except (OSError, AttributeError):
        return False
