"""Read a .nemo checkpoint without trusting it.

A .nemo is a tar archive (usually uncompressed) holding model_config.yaml, model_weights.ckpt and tokenizer files
named '<32-hex>_<name>' that the config references as 'nemo:<name>'. Archives come from the internet, so every member
is checked before anything is read: only regular files and directories, only relative paths that stay inside the
archive. Nothing is extracted but the small artifacts the config references; the weights are read in place.

The rules follow tarfile's 'data' extraction filter, stricter: a member that is a link (symbolic or hard), a device,
a FIFO or a sparse file, a name that is absolute, contains '..' or a backslash, or a name that appears twice refuses the
whole checkpoint. Members read into memory (config, tokenizer files) are capped at MAX_IN_MEMORY bytes, and the
config at MAX_CONFIG_BYTES, so a compressed archive cannot unpack a "bomb" into RAM.
"""

from __future__ import annotations

import errno
import io
import lzma
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from nemo2sherpa.errors import UserError

CONFIG_NAME = "model_config.yaml"
WEIGHTS_NAME = "model_weights.ckpt"
NEMO_PREFIX = "nemo:"
MAX_IN_MEMORY = 256 * 1024 * 1024  # config and tokenizer files are kilobytes to a few megabytes
# model_config.yaml of parakeet-tdt-0.6b-v3 (8192 tokens listed twice) is about 0.3 MB; reading YAML costs seconds
# per megabyte, so a config is refused past this before a byte of it is read.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# What reading a damaged plain, gzip, bz2 or xz tar can raise (bz2 reports bad data as OSError).
_READ_ERRORS = (OSError, EOFError, tarfile.TarError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class Member:
    name: str  # normalised: no leading './'
    raw_name: str  # as stored in the tar
    size: int
    offset: int  # byte offset of the data inside an uncompressed archive
    info: tarfile.TarInfo | None = field(default=None, compare=False, repr=False)  # the very header checked


class _Window(io.RawIOBase):
    """A read-only, seekable view of a byte range of a file: a tar member read in place."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        super().__init__()
        self._file = open(path, "rb")
        self._offset = offset
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        remaining = self._size - self._pos
        if remaining <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), remaining)]
        self._file.seek(self._offset + self._pos)
        count = self._file.readinto(view)
        self._pos += count
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


class NemoArchive:
    """An opened, checked .nemo file. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar = _open_tar(path)
        self.compressed = _is_compressed(self._tar)
        self.members = _checked_members(path, self._tar)
        for required in (CONFIG_NAME, WEIGHTS_NAME):
            if required not in self.members:
                raise UserError.about(path, f"has no {required}; is it a NeMo checkpoint?")

    def __enter__(self) -> "NemoArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._tar.close()

    def read_text(self, name: str) -> str:
        data = self._read_bytes(name)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError.about(self.path, f"{name} is not UTF-8 text") from None

    def _read_bytes(self, name: str) -> bytes:
        member = self.members[name]
        limit = min(MAX_CONFIG_BYTES, MAX_IN_MEMORY) if name == CONFIG_NAME else MAX_IN_MEMORY
        if member.size > limit:
            raise UserError.about(self.path, f"{name} claims {member.size} bytes, more than a config or tokenizer "
                                             f"file can hold ({limit}); refusing the checkpoint")
        try:
            stream = self._tar.extractfile(member.info or self._tar.getmember(member.raw_name))
            assert stream is not None
            data = stream.read()
        except _READ_ERRORS as exc:
            raise UserError.about(self.path, f"{name} cannot be read; the file is truncated or corrupt "
                                             f"({_describe(exc)})") from None
        if len(data) != member.size:
            raise UserError.about(self.path, f"{name} cannot be read; the file is truncated")
        return data

    def artifact_member(self, reference: str) -> str:
        """The member behind a config value 'nemo:<name>' (NeMo stores it as '<uuid>_<name>' or '<name>')."""
        wanted = reference[len(NEMO_PREFIX):] if reference.startswith(NEMO_PREFIX) else reference
        if wanted in self.members:
            return wanted
        matches = [name for name in self.members if name.split("/")[-1] == wanted or name.endswith("_" + wanted)]
        if len(matches) != 1:
            raise UserError.about(self.path, f"the config refers to {reference!r}, which the archive does not hold")
        return matches[0]

    def extract_artifact(self, reference: str, directory: Path) -> Path:
        name = self.artifact_member(reference)
        target = directory / PurePosixPath(name).name
        with open(target, "wb") as out:
            out.write(self._read_bytes(name))
        return target

    def open_weights(self, scratch: Path) -> BinaryIO:
        """model_weights.ckpt as a seekable stream: read in place when the archive is uncompressed, else unpacked
        once into `scratch`."""
        member = self.members[WEIGHTS_NAME]
        if not self.compressed:
            return _Window(self.path, member.offset, member.size)  # type: ignore[return-value]
        target = scratch / WEIGHTS_NAME
        source = self._tar.extractfile(member.info or self._tar.getmember(member.raw_name))
        assert source is not None
        # Errors while writing (a full disk) are the machine's, not the checkpoint's: they propagate as OSError, and
        # the staged output directory turns ENOSPC into its own one-line message.
        with open(target, "wb") as out:
            copied = 0
            while True:
                try:
                    chunk = source.read(8 * 1024 * 1024)
                except _READ_ERRORS as exc:
                    raise UserError.about(self.path, f"{WEIGHTS_NAME} cannot be read; the file is truncated or "
                                                     f"corrupt ({_describe(exc)})") from None
                if not chunk:
                    break
                out.write(chunk)
                copied += len(chunk)
        if copied != member.size:
            raise UserError.about(self.path, f"{WEIGHTS_NAME} cannot be read; the file is truncated")
        return open(target, "rb")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _open_tar(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise UserError.about(path, "is a directory, not a .nemo file" if path.is_dir() else "is not a file")
    try:
        return tarfile.open(path, mode="r:*")
    except tarfile.ReadError:
        raise UserError.about(path, "is not a .nemo checkpoint (not a tar archive, or truncated)") from None
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
            raise UserError.about(path, f"cannot be read ({exc.strerror})") from None
        raise UserError.about(path, f"cannot be read; truncated or corrupt ({_describe(exc)})") from None
    except (EOFError, tarfile.TarError, zlib.error, lzma.LZMAError) as exc:
        raise UserError.about(path, f"cannot be read; truncated or corrupt ({_describe(exc)})") from None


def _is_compressed(tar: tarfile.TarFile) -> bool:
    """Plain tars are read through the file itself; gzip/bz2/xz ones through a decompressing wrapper."""
    return not isinstance(tar.fileobj, io.BufferedReader)


def _normalise(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _checked_members(path: Path, tar: tarfile.TarFile) -> dict[str, Member]:
    """Every member, or a refusal of the whole archive at the first one that breaks a rule."""
    members: dict[str, Member] = {}
    directories: set[str] = set()
    try:
        infos = tar.getmembers()
    except _READ_ERRORS as exc:
        raise UserError.about(path, f"is truncated or corrupt ({_describe(exc)})") from None
    for info in infos:
        name = _normalise(info.name).rstrip("/")
        pure = PurePosixPath(name)
        if name in ("", "."):
            if not info.isdir():
                raise UserError.about(path, f"member {info.name!r} has no name; refusing the checkpoint")
            continue
        if pure.is_absolute() or info.name.startswith("/") or ".." in pure.parts or "\\" in name:
            raise UserError.about(path, f"member {info.name!r} points outside the archive; refusing the checkpoint")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise UserError.about(path, f"member {info.name!r} has control characters in its name; refusing the "
                                        "checkpoint")
        if info.isdir():
            if name in members:
                raise UserError.about(path, f"member {info.name!r} appears twice; refusing the checkpoint")
            directories.add(name)
            continue
        if not info.isfile() or info.issparse():
            if info.issym() or info.islnk():
                kind = f"link to {info.linkname!r}"
            elif info.isfile():
                kind = "sparse file"
            else:
                kind = "device, FIFO or other special file"
            raise UserError.about(path, f"member {info.name!r} is a {kind}; refusing the checkpoint")
        if name in members or name in directories:
            raise UserError.about(path, f"member {info.name!r} appears twice; refusing the checkpoint")
        members[name] = Member(name=name, raw_name=info.name, size=info.size, offset=info.offset_data, info=info)
    if not members:
        raise UserError.about(path, "is an empty archive")
    # A truncated archive lists its members but ends early: check the last byte each member claims.
    size = path.stat().st_size
    if not _is_compressed(tar):
        for member in members.values():
            if member.offset + member.size > size:
                raise UserError.about(path, f"is truncated: {member.name} ends past the end of the file")
    return members
