"""Build an output directory out of sight and move it into place only when it is complete.

- A hidden '.<name>.lock' beside the target, held with flock while writing: a second writer is refused at once, and
  a writer killed with -9 leaves no lock behind (the kernel drops it).
- Everything is written into '.<name>.partial-<random>' beside the target (same filesystem, so the final move is a
  rename), and partial directories left by a killed run are removed by the next run that takes the lock.
- On success the partial directory is renamed to the target (an existing target is replaced only with overwrite);
  on any failure it is removed. Nobody ever sees a directory that looks complete but is not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from nemo2sherpa.errors import UserError

PARTIAL_MARK = ".partial-"


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


RETIRED_MARK = ".replaced-"


def stale_partials(target: Path) -> list[Path]:
    """Leftovers of runs that were killed: unfinished directories and replaced ones not yet removed."""
    return sorted(
        [*target.parent.glob(f".{target.name}{PARTIAL_MARK}*"), *target.parent.glob(f".{target.name}{RETIRED_MARK}*")]
    )


@contextlib.contextmanager
def _held_lock(target: Path) -> Iterator[Path]:
    lock_path = _lock_path(target)
    try:
        handle = open(lock_path, "a+")
    except OSError as exc:
        raise UserError.about(target.parent, f"cannot write here ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError.about(target, "another nemo2sherpa process is writing this directory right now") from None
        try:
            yield lock_path
        finally:
            # Unlinking while still holding the lock: a later writer starts from a fresh lock file.
            with contextlib.suppress(OSError):
                lock_path.unlink()
    finally:
        handle.close()


@contextlib.contextmanager
def staged_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty directory to fill; on normal exit it becomes `target`."""
    target = target.expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise UserError.about(target, "exists and is not a directory")
    if target.exists() and not overwrite:
        raise UserError.about(target, "already exists; pass --overwrite to replace it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError.about(target.parent, f"cannot be created ({exc.strerror})") from None
    with _held_lock(target):
        for stale in stale_partials(target):
            shutil.rmtree(stale, ignore_errors=True)
        try:
            partial = Path(tempfile.mkdtemp(prefix=f".{target.name}{PARTIAL_MARK}", dir=target.parent))
        except OSError as exc:
            raise UserError.about(target.parent, f"cannot write here ({exc.strerror})") from None
        try:
            yield partial
            os.chmod(partial, 0o755)
            _move_into_place(partial, target, overwrite)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise UserError.about(target, "no space left on the device while writing it; nothing was kept") from None
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise UserError.about(target, f"cannot be written ({exc.strerror}); nothing was kept") from None
            raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def _move_into_place(partial: Path, target: Path, overwrite: bool) -> None:
    if not target.exists():
        os.rename(partial, target)
        return
    if not overwrite:  # appeared while we were writing
        raise UserError.about(target, "appeared while converting; pass --overwrite to replace it")
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}{RETIRED_MARK}", dir=target.parent))
    os.rename(target, retired / target.name)
    try:
        os.rename(partial, target)
    except OSError:
        os.rename(retired / target.name, target)  # put the old directory back
        raise
    finally:
        shutil.rmtree(retired, ignore_errors=True)
