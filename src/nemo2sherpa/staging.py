"""Build an output directory out of sight and move it into place only when it is complete.

- A hidden '.<name>.lock' beside the target, held with flock while writing: a second writer is refused at once, and
  a writer killed with -9 leaves no lock held (the kernel drops it; the file itself is reused by the next run). The
  lock file is created with O_EXCL and opened with O_NOFOLLOW: a symbolic link, a FIFO or a hard link planted at its
  name is refused, never followed.
- Names are literal everywhere: an output named '*' or 'a[b]' never matches another target's leftovers.
- Everything is written into '.<name>.partial-<random>' beside the target (same filesystem, so the final move is a
  rename), and partial directories left by a killed run are removed by the next run that takes the lock.
- On success the partial directory is renamed to the target. An existing target is replaced only with overwrite, by
  one atomic exchange of the two directories (renameat2 RENAME_EXCHANGE) where the filesystem supports it, so at
  every instant the target is either the old directory or the new one. Elsewhere two renames are used, with SIGINT
  and SIGTERM held back between them.
- On any failure the partial directory is removed, and so are the parent directories this run created. Nobody ever
  sees a directory that looks complete but is not.
- A full disk (ENOSPC, EDQUOT, or EFBIG under a file size limit) and a read-only or unwritable place become one line
  naming the target.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from nemo2sherpa.errors import UserError

PARTIAL_MARK = ".partial-"
RETIRED_MARK = ".replaced-"
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


# The random part tempfile.mkdtemp adds to a prefix (tempfile._RandomNameSequence: 8 of [a-z0-9_]).
_RANDOM_SUFFIX = re.compile(r"[a-z0-9_]{8}")


def stale_partials(target: Path) -> list[Path]:
    """Leftovers of runs into `target` that were killed: unfinished directories and replaced ones not yet removed.

    Names are compared literally, never as glob patterns: an output named '*' or 'a[b]' must not match (and so
    delete) another conversion's staging directory. Only '.<name>.partial-' or '.<name>.replaced-' followed by
    exactly mkdtemp's random part counts, so the leftovers of a target named 'a.partial-x' are not those of 'a'."""
    prefixes = (f".{target.name}{PARTIAL_MARK}", f".{target.name}{RETIRED_MARK}")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    return sorted(target.parent / name for name in names
                  for prefix in prefixes if name.startswith(prefix) and _RANDOM_SUFFIX.fullmatch(name[len(prefix):]))


def _remove(path: Path) -> None:
    """Remove a directory tree, or the link or file that an exchange left at its place; never raise."""
    with contextlib.suppress(OSError):
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
            return
    shutil.rmtree(path, ignore_errors=True)


def _open_lock(lock_path: Path, target: Path) -> int | None:
    """The lock file's descriptor, never through a link: created with O_EXCL (which never follows a symbolic link,
    dangling or not) or, when it exists, opened with O_NOFOLLOW and checked to be a plain file of its own. None when
    it vanished between the two (its holder unlinked it on the way out): try again.

    A planted '.<name>.lock' symbolic link would otherwise make whoever converts (root, say) create or open a file
    anywhere the link points."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        return os.open(lock_path, flags | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UserError.about(target.parent, f"cannot write here ({exc.strerror})") from None
    try:
        descriptor = os.open(lock_path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError.about(lock_path, "is a symbolic link, not a lock file; refusing to follow it (remove it "
                                             "if you did not plant it)") from None
        if exc.errno == errno.EISDIR:
            raise UserError.about(lock_path, "is not a regular file, not a lock file; refusing to use it (remove it "
                                             "if you did not plant it)") from None
        raise UserError.about(lock_path, f"cannot be opened as a lock file ({exc.strerror})") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(descriptor)
        kind = "a hard link to another file" if stat.S_ISREG(info.st_mode) else "not a regular file"
        raise UserError.about(lock_path, f"is {kind}, not a lock file; refusing to use it (remove it if you did "
                                         "not plant it)")
    return descriptor


@contextlib.contextmanager
def _held_lock(target: Path) -> Iterator[Path]:
    lock_path = _lock_path(target)
    for _attempt in range(50):
        descriptor = _open_lock(lock_path, target)
        if descriptor is None:
            continue
        handle = os.fdopen(descriptor, "r+b", buffering=0)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UserError.about(target, "another nemo2sherpa process is writing this directory right now") from None
        except BaseException:
            handle.close()
            raise
        # The holder before us unlinks the lock file on its way out: if it did so between our open and our flock, we
        # hold a lock on a file nobody else will ever open, while a third process may hold the new one. Only a lock on
        # the file that is at the path right now counts.
        try:
            held, current = os.fstat(handle.fileno()), os.lstat(lock_path)
            if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                break
        except FileNotFoundError:
            pass
        handle.close()
    else:
        raise UserError.about(target, "cannot take the lock beside it (its lock file keeps changing)")
    try:
        yield lock_path
    finally:
        # Unlinking while still holding the lock: a later writer starts from a fresh lock file.
        with contextlib.suppress(OSError):
            lock_path.unlink()
        handle.close()


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of `path` that do not exist yet, deepest first."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _write_problem(exc: BaseException, target: Path) -> str | None:
    """A one-line reason when `exc` (or what caused it) is a full disk or an unwritable place, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            if current.errno in _DISK_FULL:
                reason = "the file size limit (ulimit -f) was reached" if current.errno == errno.EFBIG else \
                    "no space left on the device"
                return f"{reason} while writing it; nothing was kept"
            if current.errno in _NOT_WRITABLE and _inside(current.filename, target.parent):
                return f"cannot be written ({current.strerror}); nothing was kept"
        elif "No space left on device" in str(current):  # libraries that wrap the OSError in their own exception
            return "no space left on the device while writing it; nothing was kept"
        current = current.__cause__ or current.__context__
    return None


def _inside(filename: object, directory: Path) -> bool:
    if not isinstance(filename, (str, bytes, os.PathLike)):
        return True  # no file named: the error came from writing our own files
    try:
        return Path(os.fsdecode(filename)).absolute().is_relative_to(directory)
    except (TypeError, ValueError):
        return True


@contextlib.contextmanager
def staged_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty directory to fill; on normal exit it becomes `target`."""
    target = target.expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise UserError.about(target, "exists and is not a directory")
    if target.exists() and not overwrite:
        raise UserError.about(target, "already exists; pass --overwrite to replace it")
    created = _missing_parents(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError.about(target.parent, f"cannot be created ({exc.strerror})") from None
    finished = False
    try:
        with _held_lock(target):
            for stale in stale_partials(target):
                _remove(stale)
            try:
                partial = Path(tempfile.mkdtemp(prefix=f".{target.name}{PARTIAL_MARK}", dir=target.parent))
            except OSError as exc:
                problem = _write_problem(exc, target)
                raise UserError.about(target.parent if problem is None else target,
                                      problem or f"cannot write here ({exc.strerror})") from None
            try:
                yield partial
                os.chmod(partial, 0o755)
                _move_into_place(partial, target, overwrite)
                finished = True
            except UserError:
                raise
            except Exception as exc:
                problem = _write_problem(exc, target)
                if problem is None:
                    raise
                raise UserError.about(target, problem) from None
            finally:
                _remove(partial)
    finally:
        if not finished:
            for parent in created:  # deepest first; only the empty ones we made
                with contextlib.suppress(OSError):
                    parent.rmdir()


def _move_into_place(partial: Path, target: Path, overwrite: bool) -> None:
    with _signals_deferred():
        if not target.exists():
            os.rename(partial, target)
            return
        if not overwrite:  # appeared while we were writing
            raise UserError.about(target, "appeared while converting; pass --overwrite to replace it")
        if _exchange(partial, target):
            return  # `partial` now holds the old directory; the caller removes it
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}{RETIRED_MARK}", dir=target.parent))
        os.rename(target, retired / target.name)
        try:
            os.rename(partial, target)
        except OSError:
            os.rename(retired / target.name, target)  # put the old directory back
            raise
        finally:
            _remove(retired)


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc before 2.28, musl
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(second))


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (main thread only: Python runs handlers there) and deliver them afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[number] = signal.signal(number, lambda signum, frame: received.append(signum))
        except (ValueError, OSError):
            continue
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if received:
            handler = previous.get(received[0])
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), received[0])
