"""Files and folders written so that an interruption never leaves a half-written result.

Everything the kit keeps (checkpoints, prepared token files, run folders, study tables and
figures, predictions) is written through here. A file goes to a temporary name beside its target
and is renamed over it; a folder is built under a temporary name and renamed into place once
complete. ``os.replace`` is atomic within one file system, so a crash, a full disk or Ctrl-C
leaves the previous version intact. Temporary names start with :data:`TMP_PREFIX`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
from typing import Callable, Iterator

from .errors import MiniSPDFError

TMP_PREFIX = ".tmp-"


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def usual_permissions(path) -> None:
    """Give a file or folder made by ``tempfile`` (owner-only, 0600/0700) the permissions that
    ``open``/``mkdir`` would have given it, so that renamed-into-place results can be shared."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


def atomic_write_bytes(path: str, write: Callable) -> None:
    """Call ``write(binary_file)`` on a temp file in the same folder, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.basename(path), dir=folder)
    except OSError as e:
        raise MiniSPDFError(
            f"cannot write {path} ({e.strerror or e}): choose a writable folder") from None
    try:
        usual_permissions(tmp)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # disk full, quota, folder removed under us: the old file is intact
        if isinstance(e, OSError):
            raise MiniSPDFError(f"cannot write {path} ({e.strerror or e}); the previous "
                                f"version, if any, "
                                "is intact: free some space or choose another folder") from None
        raise


def write_bytes(path: str, data: bytes) -> None:
    atomic_write_bytes(path, lambda f: f.write(data))


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


@contextlib.contextmanager
def publish_folder(final: str) -> Iterator[str]:
    """Build a folder under a temporary name beside ``final``: ``with publish_folder(out) as tmp:``.

    When the block ends normally the folder replaces ``final`` (an old ``final`` is moved aside,
    then deleted); on any error or interrupt it is deleted and ``final`` is left as it was. A
    symlink ``final`` stays: the folder it points to is the one replaced.
    """
    final = os.path.realpath(final)
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.path.basename(os.path.abspath(final))}-",
                           dir=parent)
    try:
        usual_permissions(tmp)
        yield tmp
        replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(new: str, final: str) -> None:
    """Rename the folder ``new`` to ``final``; an old ``final`` is moved aside first, then
    deleted."""
    # a symlink names its target: the link stays, the target is replaced
    final = os.path.realpath(final)
    old = move_aside(final) if os.path.exists(final) else None
    try:
        os.replace(new, final)
    except BaseException:
        if old:
            put_back(old, final)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def move_aside(folder: str) -> str:
    """Move ``folder`` into a new hidden holder folder beside it; returns the holder, which
    :func:`put_back` restores (or ``shutil.rmtree`` discards). A symlink's target is moved, not the
    link."""
    folder = os.path.realpath(folder)
    name = os.path.basename(os.path.abspath(folder))
    holder = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{name}-old-",
                              dir=os.path.dirname(os.path.abspath(folder)))
    os.replace(folder, os.path.join(holder, name))
    return holder


def put_back(holder: str, folder: str) -> None:
    """Undo :func:`move_aside`: whatever is at ``folder`` now is deleted and the old one returns."""
    folder = os.path.realpath(folder)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(os.path.join(holder, os.path.basename(os.path.abspath(folder))), folder)
    os.rmdir(holder)


def read_json(path: str):
    """The JSON value in ``path``, or None if it is missing or unreadable (a bookkeeping file that a
    killed run may have left half-written is simply not there; a FIFO or device is not opened)."""
    if file_problem(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError, RecursionError):
        return None


def valid_unicode(value) -> bool:
    """Whether every string in the JSON value ``value`` is valid Unicode: JSON's ``\\ud800``
    escapes decode to lone surrogates, which no UTF-8 writer (nor a tokenizer) accepts."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def file_problem(path) -> str | None:
    """Why ``path`` cannot be read as a file ("does not exist", "is a directory", "is not a regular
    file ..."), or None. A FIFO would block the reader forever and /dev/null reads as empty."""
    if os.path.isdir(path):
        return "is a directory"
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a regular file (a pipe, device or socket)"
    return None


def require_readable(path, what: str, fix: str, folder_ok: bool = False) -> None:
    """Refuse ``path`` by its type before anything opens it, in one line: "{what} {path} {why}:
    {fix}". A FIFO would block the reader forever, a device reads as endless or empty data; with
    ``folder_ok`` a folder passes (the caller looks inside it, through this again)."""
    why = file_problem(path)
    if why and not (folder_ok and why == "is a directory"):
        raise MiniSPDFError(f"{what} {path} {why}: {fix}")


def lock_path(target: str) -> str:
    """The lock file that guards the name ``target``: a hidden sibling, ``.NAME.minispdf.lock``.

    Beside the target, not inside it, so that it guards the *name*: a folder published by
    renaming a temp folder over it, or moved aside by ``--overwrite``, stays guarded. A symlink
    is followed, so a link and its target are one name."""
    real = os.path.realpath(target)
    return os.path.join(os.path.dirname(real), f".{os.path.basename(real)}.minispdf.lock")


def in_use(target: str, what: str, holder: str) -> MiniSPDFError:
    return MiniSPDFError(f"{target} is in use by another minispdf {what} (pid {holder}): wait for "
                         f"it to finish "
                         "(or stop it), or choose another folder")


def check_not_in_use(target: str, what: str = "run") -> None:
    """Refuse at once, naming the pid, if another process holds ``target``'s writer lock; so that a
    second writer hears "in use", not a complaint about the files the first one is writing. The
    lock itself is taken later with :func:`writer_lock`."""
    import fcntl

    try:
        fd = os.open(lock_path(target), os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        if holder != str(os.getpid()):  # this process's own writer_lock is not another writer
            raise in_use(target, what, holder) from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def writer_lock(target: str, what: str = "run", wait: bool = False) -> Iterator[str]:
    """``with writer_lock(out):`` -- one writer at a time for the file or folder ``target``.

    An OS lock (``fcntl.flock``) on :func:`lock_path`, which also holds the holder's pid for the
    message. A second process gets one :class:`MiniSPDFError` naming that pid (or, with ``wait``,
    waits for it). The OS drops the lock when its holder dies, so a killed run's lock is taken over
    with no questions asked. The file is removed on release; a process that locked a file just
    removed (inode check) starts over, so two processes can never both hold one name.
    """
    import fcntl

    path = lock_path(target)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as e:
        raise MiniSPDFError(
            f"cannot lock {target} ({e.strerror or e}): choose a writable folder") from None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise MiniSPDFError(
                f"cannot lock {target} ({e.strerror or e}): choose a writable folder") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                if not wait:
                    raise in_use(target, what, holder) from None
                print(f"waiting for pid {holder}, which is writing {target}", file=sys.stderr,
                      flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:  # its holder removed it as we opened it: lock the new one
                os.close(fd)
                continue
        except BaseException:
            os.close(fd)
            raise
        break
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            # still holding it: a process waiting on this inode sees it gone and starts over
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 -- where native code and subprocesses write (the profiler's log
    lines, Java's) -- to a temporary file while inside; yields ``{"text": ...}``, filled on exit
    with the last 300 characters written there (for an error message)."""
    captured = {"text": ""}
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 to silence
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+", errors="replace") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            captured["text"] = log.read()[-300:]
