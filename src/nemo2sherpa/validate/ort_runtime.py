"""Which onnxruntime sherpa-onnx runs on, and routing it through another one (for CUDA from onnxruntime-gpu).

Why this exists: the sherpa-onnx wheel on PyPI bundles a CPU-only onnxruntime (sherpa_onnx/lib/libonnxruntime.so,
found through the extension's RPATH $ORIGIN). Asked for provider="cuda", it only logs "... Fallback to cpu!" from
C++ on file descriptor 2 and runs on CPU; nothing in its Python API says so. Its extension imports a single symbol
from that library, OrtGetApiBase, under the symbol version of the onnxruntime it was built with (VERS_1.28.2 for
sherpa-onnx 2.0.1), so another onnxruntime cannot simply be dropped in. What does work:

1. :func:`build_shim` compiles ``ort_shim.c`` (package data) with the system C compiler into a user cache: a
   library with SONAME ``libonnxruntime.so`` exporting ``OrtGetApiBase@@<required version>`` that dlopen()s the
   target onnxruntime (for example onnxruntime-gpu's ``capi/libonnxruntime.so.1.x``) and returns its OrtApiBase.
2. :func:`preload_runtime` loads it RTLD_GLOBAL *before* ``import sherpa_onnx``. When the extension is then loaded,
   the dynamic loader finds an object with the SONAME it needs already in the process and never opens the bundled
   library; ``OrtGetApiBase@VERS_x`` binds to the shim (global scope is searched first).
3. :func:`loaded_runtime_summary` then reports, from inside the process, what sherpa-onnx actually uses: the
   version string of the onnxruntime behind SONAME ``libonnxruntime.so``, how many OrtGetApiBase calls went through
   the shim, and whether the bundled library is mapped at all.

This module must not import NeMo or torch (the base/validate install has neither), nor sherpa_onnx or onnxruntime
at import time: importing sherpa_onnx fixes the onnxruntime for the rest of the process.

ELF facts (DT_NEEDED, RPATH/RUNPATH, symbol versions) are read by a small pure-Python ELF reader here, not by
``readelf``: binutils is often missing on user machines, and the reader needs only .dynamic, .dynsym, .gnu.version,
.gnu.version_r and .gnu.version_d. Linux/ELF only; elsewhere sherpa_runtime_info() refuses with a UserError.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import io
import json
import mmap
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from nemo2sherpa.errors import UserError

#: DT_NEEDED name of onnxruntime in sherpa-onnx's extension, and the SONAME the shim takes over.
ONNXRUNTIME_SONAME = "libonnxruntime.so"
#: The only onnxruntime symbol the shim provides; sherpa-onnx's extension must need nothing else from the library.
SHIM_EXPORTS = ("OrtGetApiBase",)
#: Environment variable read by the shim at run time; overrides the target compiled in.
TARGET_ENV = "NEMO2SHERPA_ORT_TARGET"
CUDA_PROVIDER_LIBRARY = "libonnxruntime_providers_cuda.so"
SHIM_SOURCE = Path(__file__).with_name("ort_shim.c")

# sherpa-onnx's own words when it cannot use the provider it was asked for (sherpa-onnx/csrc/session.cc, also seen
# as strings in the 2.0.1 extension): "Please compile with -DSHERPA_ONNX_ENABLE_GPU=ON. Available providers: %s.
# Fallback to cpu!" when the runtime lists no CUDAExecutionProvider, "Failed to enable CUDA: %s. Available
# providers: %s. Fallback to cpu" when it lists one that fails to start (missing CUDA/cuDNN libraries), and
# "Unsupported string: %s. Fallback to cpu" for an unknown provider name. ("Fallback to cuda" from TensorRT is not a
# fall back to CPU.)
_FALLBACK = re.compile(r"fallback to cpu|SHERPA_ONNX_ENABLE_GPU=ON", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------- ELF reading

_SHT_DYNAMIC, _SHT_DYNSYM = 6, 11
_SHT_GNU_VERDEF, _SHT_GNU_VERNEED, _SHT_GNU_VERSYM = 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
_DT_NEEDED, _DT_SONAME, _DT_RPATH, _DT_RUNPATH = 1, 14, 15, 29
_VER_FLG_BASE = 0x1


@dataclass(frozen=True)
class ElfDynamic:
    """What the dynamic loader reads from one shared library, as far as this module needs it."""

    needed: tuple[str, ...]
    soname: str | None
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    # undefined symbol -> (library file named in .gnu.version_r, version name); unversioned ones are left out
    required: dict[str, tuple[str, str]]
    # version definitions (.gnu.version_d) without the BASE entry, e.g. ("VERS_1.32.0",)
    defined_versions: tuple[str, ...]
    # defined dynamic symbol -> its version name ("" when unversioned)
    defined: dict[str, str]


def read_elf_dynamic(path: Path) -> ElfDynamic:
    """Parse the dynamic section and symbol versioning of an ELF shared library (32/64-bit, either byte order)."""
    with open(path, "rb") as handle:
        try:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            raise UserError.about(path, "not an ELF shared library") from None
    with data:
        if data[:4] != b"\x7fELF":
            raise UserError.about(path, "not an ELF shared library")
        try:
            return _parse_elf(data)
        except (struct.error, ValueError, IndexError) as exc:
            raise UserError.about(path, f"unreadable ELF file ({exc})") from None


def _parse_elf(data: mmap.mmap) -> ElfDynamic:
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum, _shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
        shdr = end + "IIQQQQIIQQ"  # name type flags addr offset size link info addralign entsize
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum, _shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)
        shdr = end + "IIIIIIIIII"
    sections = []
    for index in range(shnum):
        name, kind, _flags, _addr, offset, size, link, info, _align, entsize = \
            struct.unpack_from(shdr, data, shoff + index * shentsize)
        sections.append({"type": kind, "offset": offset, "size": size, "link": link, "info": info,
                         "entsize": entsize})

    def cstring(table: dict, offset: int) -> str:
        start = table["offset"] + offset
        return data[start:data.find(b"\0", start)].decode("utf-8", "replace")

    def first(kind: int) -> dict | None:
        return next((s for s in sections if s["type"] == kind), None)

    needed: list[str] = []
    soname, rpath, runpath = None, [], []
    dynamic = first(_SHT_DYNAMIC)
    if dynamic is not None:
        strtab = sections[dynamic["link"]]
        fmt = end + ("qQ" if is64 else "iI")
        step = struct.calcsize(fmt)
        for offset in range(dynamic["offset"], dynamic["offset"] + dynamic["size"], step):
            tag, value = struct.unpack_from(fmt, data, offset)
            if tag == 0:
                break
            if tag == _DT_NEEDED:
                needed.append(cstring(strtab, value))
            elif tag == _DT_SONAME:
                soname = cstring(strtab, value)
            elif tag == _DT_RPATH:
                rpath += [p for p in cstring(strtab, value).split(":") if p]
            elif tag == _DT_RUNPATH:
                runpath += [p for p in cstring(strtab, value).split(":") if p]

    # version index -> (file, name) for needed versions; index -> name for defined ones
    needed_versions: dict[int, tuple[str, str]] = {}
    verneed = first(_SHT_GNU_VERNEED)
    if verneed is not None:
        strtab, offset = sections[verneed["link"]], verneed["offset"]
        for _ in range(verneed["info"] or 1 << 16):
            _version, count, file_name, aux, next_entry = struct.unpack_from(end + "HHIII", data, offset)
            library = cstring(strtab, file_name)
            aux_offset = offset + aux
            for _ in range(count):
                _hash, _flags, other, name, next_aux = struct.unpack_from(end + "IHHII", data, aux_offset)
                needed_versions[other] = (library, cstring(strtab, name))
                if not next_aux:
                    break
                aux_offset += next_aux
            if not next_entry:
                break
            offset += next_entry
    defined_versions: dict[int, str] = {}
    base_versions: set[int] = set()
    verdef = first(_SHT_GNU_VERDEF)
    if verdef is not None:
        strtab, offset = sections[verdef["link"]], verdef["offset"]
        for _ in range(verdef["info"] or 1 << 16):
            _version, flags, index, count, _hash, aux, next_entry = struct.unpack_from(end + "HHHHIII", data, offset)
            if count:
                name, _next = struct.unpack_from(end + "II", data, offset + aux)
                defined_versions[index] = cstring(strtab, name)
                if flags & _VER_FLG_BASE:
                    base_versions.add(index)
            if not next_entry:
                break
            offset += next_entry

    required: dict[str, tuple[str, str]] = {}
    defined: dict[str, str] = {}
    dynsym, versym = first(_SHT_DYNSYM), first(_SHT_GNU_VERSYM)
    if dynsym is not None:
        strtab = sections[dynsym["link"]]
        fmt = end + ("IBBHQQ" if is64 else "IIIBBH")
        step = dynsym["entsize"] or struct.calcsize(fmt)
        for index in range(dynsym["size"] // step):
            fields = struct.unpack_from(fmt, data, dynsym["offset"] + index * step)
            name_offset, shndx = (fields[0], fields[3]) if is64 else (fields[0], fields[5])
            if not name_offset:
                continue
            name = cstring(strtab, name_offset)
            version = struct.unpack_from(end + "H", data, versym["offset"] + 2 * index)[0] & 0x7FFF \
                if versym is not None else 0
            if shndx == 0:  # undefined: needed from some other object
                if version in needed_versions:
                    required[name] = needed_versions[version]
            else:
                defined[name] = "" if version in base_versions else defined_versions.get(version, "")
    return ElfDynamic(needed=tuple(needed), soname=soname, rpath=tuple(rpath), runpath=tuple(runpath),
                      required=required,
                      defined_versions=tuple(v for i, v in sorted(defined_versions.items()) if i not in base_versions),
                      defined=defined)


def _version_tuple(symbol_version: str | None) -> tuple[int, ...] | None:
    """'VERS_1.28.2' -> (1, 28, 2); None when the name carries no version number."""
    match = re.search(r"(\d+(?:\.\d+)+)", symbol_version or "")
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


# ------------------------------------------------------------------------------------------- what sherpa loads


@dataclass(frozen=True)
class RuntimeInfo:
    """The onnxruntime that ``import sherpa_onnx`` would load, read from the files without importing it."""

    extension: Path  # sherpa-onnx's Python extension (_sherpa_onnx*.so)
    library: Path | None  # the libonnxruntime.so the loader would pick for it (None: not found on its search path)
    version: str | None  # that library's OrtGetApiBase()->GetVersionString(), e.g. "1.28.2"
    required_symbol_version: str | None  # e.g. "VERS_1.28.2": what the extension needs OrtGetApiBase to carry
    required_symbols: tuple[str, ...]  # every symbol the extension imports from libonnxruntime.so
    cuda_provider: bool  # libonnxruntime_providers_cuda.so next to the library: a CUDA-capable build

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def _sherpa_package_dir() -> Path:
    # find_spec on the top-level package does not execute it; importing sherpa_onnx.lib would.
    spec = importlib.util.find_spec("sherpa_onnx")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("sherpa-onnx is not installed: pip install 'nemo2sherpa[validate]' (or sherpa-onnx)")
    return Path(next(iter(spec.submodule_search_locations)))


def sherpa_extension() -> Path:
    """The sherpa-onnx Python extension module file (lib/_sherpa_onnx*.so in current wheels)."""
    package = _sherpa_package_dir()
    candidates = sorted(package.glob("lib/_sherpa_onnx*.so")) + sorted(package.glob("_sherpa_onnx*.so")) \
        + sorted(package.parent.glob("_sherpa_onnx*.so"))
    if not candidates:
        raise UserError.about(package, "no _sherpa_onnx*.so extension found in the sherpa-onnx package "
                                       "(only Linux wheels are supported here)")
    return candidates[0]


def _resolve_needed(binary: Path, elf: ElfDynamic, name: str) -> Path | None:
    """Where the dynamic loader would find DT_NEEDED `name` for `binary` (ld.so(8) order, without ld.so.cache)."""
    origin = str(binary.resolve().parent)

    def expand(entries) -> list[str]:
        return [e.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for e in entries]

    search = expand(elf.rpath) if not elf.runpath else []
    search += [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    search += expand(elf.runpath)
    search += ["/lib64", "/usr/lib64", "/lib", "/usr/lib", f"/usr/lib/{platform.machine()}-linux-gnu",
               f"/lib/{platform.machine()}-linux-gnu"]
    for directory in search:
        candidate = Path(directory) / name
        if candidate.is_file():
            return candidate.resolve()
    return None


_VERSION_PROBE = r"""
import ctypes, sys
class ApiBase(ctypes.Structure):
    _fields_ = [("GetApi", ctypes.c_void_p), ("GetVersionString", ctypes.CFUNCTYPE(ctypes.c_char_p))]
lib = ctypes.CDLL(sys.argv[1])
lib.OrtGetApiBase.restype = ctypes.POINTER(ApiBase)
sys.stdout.write(lib.OrtGetApiBase().contents.GetVersionString().decode())
"""


@lru_cache(maxsize=16)
def _library_version_cached(path: str, _stamp: tuple[int, int]) -> str | None:
    done = subprocess.run([sys.executable, "-I", "-S", "-c", _VERSION_PROBE, path], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def library_version(library: Path) -> str | None:
    """OrtGetApiBase()->GetVersionString() of an onnxruntime library file, asked in a throwaway interpreter.

    Why not in this process: a library loaded with ctypes stays loaded (onnxruntime does not unload cleanly), and
    the bundled one has SONAME libonnxruntime.so. In a process that later preloads the shim and imports sherpa_onnx,
    the loader would then match the extension's DT_NEEDED against the *bundled* object (first in the link map),
    mapping two onnxruntimes and leaving the choice to symbol-scope order. A child interpreter (python -I -S, a few
    tens of milliseconds) keeps the caller clean. Falls back to the version in the library's symbol-version
    definitions (VERS_x.y.z) if the child fails.
    """
    library = Path(library)
    stat = library.stat()
    version = _library_version_cached(str(library.resolve()), (stat.st_size, stat.st_mtime_ns))
    if version is None:
        try:
            numbers = _version_tuple(next(iter(read_elf_dynamic(library).defined_versions), None))
        except (OSError, UserError, struct.error):
            numbers = None
        version = ".".join(map(str, numbers)) if numbers else None
    return version


def sherpa_runtime_info(query_version: bool = True) -> RuntimeInfo:
    """What `import sherpa_onnx` would load, from the installed files; never imports sherpa_onnx.

    query_version=False skips the child interpreter that asks the library for its version string.
    """
    if not sys.platform.startswith("linux"):
        raise UserError(f"routing sherpa-onnx through another onnxruntime is supported on Linux only, not "
                        f"{sys.platform}")
    extension = sherpa_extension()
    elf = read_elf_dynamic(extension)
    needed = next((n for n in elf.needed if n.startswith("libonnxruntime")), ONNXRUNTIME_SONAME)
    library = _resolve_needed(extension, elf, needed)
    imports = {name: version for name, (file, version) in elf.required.items() if file == needed}
    versions = sorted(set(imports.values()))
    return RuntimeInfo(
        extension=extension,
        library=library,
        version=library_version(library) if (query_version and library is not None) else None,
        required_symbol_version=imports.get("OrtGetApiBase", versions[0] if versions else None),
        required_symbols=tuple(sorted(imports)),
        cuda_provider=library is not None and has_cuda_provider(library.parent),
    )


# -------------------------------------------------------------------------------------- the other onnxruntime


def has_cuda_provider(library_dir: Path) -> bool:
    """Whether onnxruntime's CUDA execution provider library sits in `library_dir` (as in onnxruntime-gpu's capi/).

    onnxruntime loads libonnxruntime_providers_cuda.so from its own directory when a CUDA session is asked for;
    without that file the CUDA provider is not even listed. Its presence does not prove CUDA/cuDNN will load.
    """
    return (Path(library_dir) / CUDA_PROVIDER_LIBRARY).is_file()


def onnxruntime_gpu_library() -> Path | None:
    """libonnxruntime.so.<version> of the installed `onnxruntime` Python package, or None.

    onnxruntime-gpu installs under the same import name as onnxruntime, so this finds either; whether it is a CUDA
    build is :func:`has_cuda_provider` on its directory. Found without importing onnxruntime.
    """
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    found = [p for p in capi.glob("libonnxruntime.so*") if re.fullmatch(r"libonnxruntime\.so(\.\d+)*", p.name)]
    if not found:
        return None
    # prefer the fully versioned real file over any symlinks to it
    found.sort(key=lambda p: (not p.is_symlink(), len(p.name)), reverse=True)
    return found[0].resolve()


def preload_cuda_libraries() -> str | None:
    """Load NVIDIA's pip-installed CUDA/cuDNN libraries through onnxruntime.preload_dlls(), if onnxruntime has it.

    Call after :func:`preload_runtime` and before the recognizer is created: onnxruntime-gpu's CUDA provider
    (libonnxruntime_providers_cuda.so, loaded by the target onnxruntime from its own directory) finds libcudart,
    libcublas(Lt), libcurand and libcudnn only if they are on the loader path or already loaded. Returns None when
    preload_dlls() reported nothing, else its complaints (it prints them on stdout, which is captured here so a
    worker's stdout stays clean). Note: `import onnxruntime` maps a second, statically linked onnxruntime core (the
    Python bindings); it stays idle as long as no onnxruntime.InferenceSession is created in this process.
    """
    try:
        import onnxruntime  # only the CUDA path needs it
    except ImportError as exc:
        return f"onnxruntime is not importable: {exc}"
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is None:
        return (f"onnxruntime {getattr(onnxruntime, '__version__', '?')} has no preload_dlls(); the CUDA libraries "
                "must be on LD_LIBRARY_PATH")
    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            preload()
    except Exception as exc:  # noqa: BLE001 - reported; sherpa-onnx's own fallback log decides
        return f"onnxruntime.preload_dlls() failed: {exc}"
    complaints = [line.strip() for line in printed.getvalue().splitlines() if line.strip()]
    return " ".join(complaints) or None


# ------------------------------------------------------------------------------------------------ build the shim


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nemo2sherpa" / "ort-shim"


def _compiler() -> str:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate:
            found = shutil.which(candidate.split()[0])
            if found:
                return found
    raise UserError("routing sherpa-onnx through another onnxruntime compiles a small C library, but no C compiler "
                    "was found (tried $CC, cc, gcc, clang): install one (Debian/Ubuntu: apt-get install gcc; "
                    "Fedora/RHEL: dnf install gcc; conda: conda install -c conda-forge c-compiler) or set CC")


def _c_string(text: str) -> str:
    """A C string literal for `text`: printable ASCII kept, every other byte as a three-digit octal escape."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\?' else f"\\{b:03o}"
                         for b in text.encode()) + '"'


def build_shim(target: Path, symbol_version: str | None, cache_dir: Path | None = None,
               required_symbols: tuple[str, ...] = SHIM_EXPORTS) -> Path:
    """Compile (or reuse) the forwarding libonnxruntime.so for `target`, exporting OrtGetApiBase@@`symbol_version`.

    Output: <cache_dir or $XDG_CACHE_HOME/nemo2sherpa/ort-shim or ~/.cache/nemo2sherpa/ort-shim>/<hash>/
    libonnxruntime.so, where the hash covers the C source, the target (path, size, mtime), the version and the
    compiler, so a reinstalled onnxruntime gets a new shim. The build goes to a temporary name and is renamed into
    place, so concurrent builds are safe. `symbol_version` None builds an unversioned export, for an extension that
    was linked against an unversioned onnxruntime. `required_symbols` (RuntimeInfo.required_symbols) is checked
    against what the shim provides.
    """
    target = Path(target).resolve()
    if not target.is_file():
        raise UserError.about(target, "onnxruntime library not found")
    missing = sorted(set(required_symbols) - set(SHIM_EXPORTS))
    if missing:
        raise UserError(f"this sherpa-onnx imports {', '.join(missing)} from onnxruntime besides OrtGetApiBase; "
                        "the forwarding shim provides only OrtGetApiBase, so it cannot route it through another "
                        "onnxruntime: install a CUDA build of sherpa-onnx instead")
    if symbol_version is not None and not re.fullmatch(r"[A-Za-z0-9_.]+", symbol_version):
        raise ValueError(f"unexpected symbol version {symbol_version!r}")
    target_elf = read_elf_dynamic(target)
    if "OrtGetApiBase" not in target_elf.defined:
        raise UserError.about(target, "is not an onnxruntime library (it does not export OrtGetApiBase)")
    wanted, offered = _version_tuple(symbol_version), _version_tuple(target_elf.defined.get("OrtGetApiBase"))
    if wanted and offered and offered[:2] < wanted[:2]:
        # onnxruntime's GetApi(N) returns NULL for an API version newer than the library; sherpa-onnx would crash.
        raise UserError.about(target, f"onnxruntime {'.'.join(map(str, offered))} is older than the "
                                      f"{'.'.join(map(str, wanted))} this sherpa-onnx was built against; install "
                                      f"onnxruntime-gpu>={'.'.join(map(str, wanted[:2]))}")
    compiler = _compiler()
    source = SHIM_SOURCE.read_bytes()
    stat = target.stat()
    key = hashlib.sha256(json.dumps([source.hex(), str(target), stat.st_size, stat.st_mtime_ns, symbol_version,
                                     compiler, platform.machine()]).encode()).hexdigest()[:20]
    directory = (Path(cache_dir) if cache_dir is not None else _cache_root()) / key
    output = directory / ONNXRUNTIME_SONAME
    if output.is_file():
        return output
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".build-") as scratch:
        script = Path(scratch) / "exports.map"
        exports = "".join(f"    {name};\n" for name in (*SHIM_EXPORTS, "nemo2sherpa_ort_shim_*"))
        script.write_text(f"{symbol_version or ''} {{\n  global:\n{exports}  local: *;\n}};\n")
        built = Path(scratch) / ONNXRUNTIME_SONAME
        command = [compiler, "-shared", "-fPIC", "-O2", "-o", str(built), str(SHIM_SOURCE),
                   f"-DNEMO2SHERPA_ORT_TARGET={_c_string(str(target))}",
                   f"-Wl,-soname,{ONNXRUNTIME_SONAME}", f"-Wl,--version-script={script}", "-ldl", "-lpthread"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not built.is_file():
            tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
            raise UserError(f"compiling the onnxruntime shim failed ({' '.join(command[:1])}): {tail[-600:]}")
        (directory / "build.json").write_text(json.dumps(
            {"target": str(target), "symbol_version": symbol_version, "compiler": compiler, "command": command},
            indent=1))
        os.replace(built, output)
    return output


# ------------------------------------------------------------------------------------------ load it in-process


class _OrtApiBase(ctypes.Structure):
    # onnxruntime_c_api.h: struct OrtApiBase { const OrtApi* (*GetApi)(uint32_t); const char* (*GetVersionString)(); }
    _fields_ = [("GetApi", ctypes.c_void_p), ("GetVersionString", ctypes.CFUNCTYPE(ctypes.c_char_p))]


def _api_version(library: ctypes.CDLL) -> str:
    function = library.OrtGetApiBase
    function.restype = ctypes.POINTER(_OrtApiBase)
    function.argtypes = []
    return function().contents.GetVersionString().decode()


def _loaded_soname() -> ctypes.CDLL | None:
    """The object already in this process under SONAME libonnxruntime.so (shim or bundled), without loading one."""
    try:
        return ctypes.CDLL(ONNXRUNTIME_SONAME, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    except OSError:
        return None


def _is_shim(library: ctypes.CDLL) -> bool:
    return hasattr(library, "nemo2sherpa_ort_shim_target")


def _shim_target(library: ctypes.CDLL) -> str:
    function = library.nemo2sherpa_ort_shim_target
    function.restype = ctypes.c_char_p
    return (function() or b"").decode()


def _shim_target_version(library: ctypes.CDLL) -> str:
    function = library.nemo2sherpa_ort_shim_target_version
    function.restype = ctypes.c_char_p
    return (function() or b"").decode()


def _shim_calls(library: ctypes.CDLL) -> int:
    function = library.nemo2sherpa_ort_shim_calls
    function.restype = ctypes.c_ulong
    return int(function())


def preload_runtime(shim: Path) -> str:
    """Load the shim RTLD_GLOBAL so a later `import sherpa_onnx` binds to it; returns the target's version string.

    Must run before sherpa_onnx is imported in this process: once the extension is loaded its OrtGetApiBase is
    bound (sherpa-onnx's C++ wrapper even calls it during static initialisation). Calling it again with the same
    shim is a no-op.
    """
    shim = Path(shim).resolve()
    if any(name == "sherpa_onnx" or name.startswith("sherpa_onnx.") for name in sys.modules):
        raise RuntimeError("preload_runtime() must run before `import sherpa_onnx`: this process already imported "
                           "it, and its onnxruntime is fixed at import; run sherpa-onnx in a fresh process")
    present = _loaded_soname()
    if present is not None:
        if _is_shim(present) and _loaded_path(present) == shim:
            return _shim_target_version(present)
        raise RuntimeError(f"a library with SONAME {ONNXRUNTIME_SONAME} is already loaded in this process "
                           f"({_loaded_path(present) or 'unknown path'}); the shim must be the first")
    library = ctypes.CDLL(str(shim), mode=os.RTLD_GLOBAL | os.RTLD_NOW)
    resolve = library.nemo2sherpa_ort_shim_resolve
    resolve.restype = ctypes.c_int
    if not resolve():
        error = library.nemo2sherpa_ort_shim_error
        error.restype = ctypes.c_char_p
        raise UserError(f"the onnxruntime shim {shim} cannot load its target: {(error() or b'').decode()}")
    return _shim_target_version(library)


# -------------------------------------------------------------------------------------- what is really loaded


def _mapped_files() -> list[str]:
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    seen: dict[str, None] = {}
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith("/"):
            seen.setdefault(parts[5], None)
    return list(seen)


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p), ("dli_sname", ctypes.c_char_p),
                ("dli_saddr", ctypes.c_void_p)]


def _loaded_path(library: ctypes.CDLL) -> Path | None:
    """The file a loaded library came from (dladdr on its OrtGetApiBase)."""
    address = ctypes.cast(library.OrtGetApiBase, ctypes.c_void_p)
    for libc_name in (None, "libdl.so.2"):
        try:
            dladdr = ctypes.CDLL(libc_name).dladdr
        except (OSError, AttributeError):
            continue
        info = _DlInfo()
        dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
        if dladdr(address, ctypes.byref(info)) and info.dli_fname:
            return Path(info.dli_fname.decode()).resolve()
    return None


@dataclass
class LoadedRuntime:
    """The onnxruntime this process actually uses under SONAME libonnxruntime.so (after `import sherpa_onnx`)."""

    loaded: bool  # an object with SONAME libonnxruntime.so is in the process
    version: str | None  # GetVersionString() of what OrtGetApiBase resolves to through it
    library: str | None  # the real onnxruntime file behind it (the shim's target when routed)
    shim: str | None = None  # the shim file, when routed
    shim_calls: int | None = None  # OrtGetApiBase calls forwarded before this report (sherpa-onnx's own)
    bundled_library_mapped: bool | None = None  # sherpa-onnx's bundled libonnxruntime.so is mapped in this process
    # every mapped file with "onnxruntime" in its name (also the Python bindings' own core, if imported)
    mapped_onnxruntime_libraries: list[str] = field(default_factory=list)
    cuda_provider_library: bool = False  # libonnxruntime_providers_cuda.so next to `library`


def loaded_runtime() -> LoadedRuntime:
    """Report the onnxruntime in use here, without loading anything new (dlopen RTLD_NOLOAD on the SONAME).

    Evidence that sherpa-onnx was routed: `shim` is set, `shim_calls` > 0 (its C++ wrapper fetched the API table
    through the shim), `version` is the target's, and `bundled_library_mapped` is False.
    """
    mapped = [p for p in _mapped_files() if "onnxruntime" in Path(p).name and ".so" in Path(p).name]
    try:
        bundled = sherpa_runtime_info(query_version=False).library
    except UserError:
        bundled = None
    present = _loaded_soname()
    report = LoadedRuntime(loaded=present is not None, version=None, library=None,
                           bundled_library_mapped=None if bundled is None else str(bundled) in mapped,
                           mapped_onnxruntime_libraries=mapped)
    if present is None:
        return report
    if _is_shim(present):
        report.shim = str(_loaded_path(present) or "")
        report.shim_calls = _shim_calls(present)
        report.library = _shim_target(present)
        report.version = _shim_target_version(present) or None
    else:
        path = _loaded_path(present)
        report.library = str(path) if path else None
        report.version = _api_version(present)
    report.cuda_provider_library = bool(report.library) and has_cuda_provider(Path(report.library).parent)
    return report


_NVIDIA_LIBRARY = re.compile(r"lib(cudart|cublas|cublasLt|cudnn)\w*\.so")


def provider_evidence() -> dict[str, Any]:
    """What this process shows of the execution providers: whether onnxruntime's CUDA provider library is mapped
    (onnxruntime loads it only to create a CUDA session, so after a CUDA run it is the proof the provider started),
    the NVIDIA libraries mapped, and the provider list of the onnxruntime Python package when it was imported
    (onnxruntime-gpu on the CUDA path; never imported here, since that would map a second onnxruntime core)."""
    names = [Path(p).name for p in _mapped_files()]
    evidence: dict[str, Any] = {
        "cuda_provider_loaded": CUDA_PROVIDER_LIBRARY in names,
        "nvidia_libraries_loaded": sorted({n for n in names if _NVIDIA_LIBRARY.match(n)}),
    }
    module = sys.modules.get("onnxruntime")
    if module is not None and hasattr(module, "get_available_providers"):
        evidence["onnxruntime_available_providers"] = list(module.get_available_providers())
    return evidence


def loaded_runtime_summary() -> dict[str, Any]:
    """:func:`loaded_runtime` as a JSON-ready dict for a results file (onnxruntime_* names for the core facts)."""
    data = asdict(loaded_runtime())
    for key in ("loaded", "version", "library"):
        data[f"onnxruntime_{key}"] = data.pop(key)
    return data


# ------------------------------------------------------------------------------------ sherpa-onnx's C++ logging


@dataclass
class CapturedText:
    """Filled in when the `captured_fd_stderr` block ends."""

    text: str = ""


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


@contextmanager
def captured_fd_stderr(echo: bool = False) -> Iterator[CapturedText]:
    """Capture everything written to file descriptor 2 inside the block: C/C++ code (sherpa-onnx, onnxruntime), and
    Python's sys.stderr when that is the process's real stderr (not when a test runner has replaced it).

    sherpa-onnx reports a provider fall back only as a C++ log line on stderr, which sys.stderr redirection cannot
    see. fd 2 is pointed at a temporary file (a file, not a pipe: a chatty library cannot fill a pipe buffer and
    block) and restored afterwards, also on exceptions; `echo` writes the captured text to the real stderr too.
    Not thread-safe: fd 2 is process-wide.
    """
    captured = CapturedText()
    if sys.stderr is not None:
        sys.stderr.flush()
    _flush_c_stdio()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield captured
            finally:
                if sys.stderr is not None:
                    try:
                        sys.stderr.flush()
                    except (OSError, ValueError):
                        pass
                _flush_c_stdio()
                os.dup2(saved, 2)
                sink.seek(0)
                captured.text = sink.read().decode("utf-8", "replace")
                if echo and captured.text:
                    os.write(2, captured.text.encode("utf-8", "replace"))
    finally:
        os.close(saved)


# A record of sherpa-onnx's log starts with "<file>.cc:<function>:<line> "; onnxruntime's own log lines start with a
# timestamp. Anything else continues the record before it (onnxruntime error texts embedded in sherpa-onnx's message
# carry newlines).
_RECORD_START = re.compile(r"^(?:\S+\.(?:cc|cpp|h):\w+:\d+ |\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)")


def fallback_messages(log_text: str) -> list[str]:
    """sherpa-onnx's messages saying it fell back to CPU, each on one line, with the reason it gives.

    e.g. "…session.cc:AppendCudaProviderV2:198 Failed to enable CUDA: … libcublasLt.so.13: cannot open shared
    object file … . Available providers: TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider, .
    Fallback to cpu".
    """
    records: list[list[str]] = []
    continues = False
    for line in log_text.splitlines():
        if not line.strip():
            continue
        if continues and not _RECORD_START.match(line):
            records[-1].append(line.strip())
        else:
            records.append([line.strip()])
            continues = bool(_RECORD_START.match(line))
    messages = [" ".join(record) for record in records]
    return [message for message in messages if _FALLBACK.search(message)]


def fallback_detected(log_text: str) -> bool:
    """Whether sherpa-onnx's log says it ran on CPU instead of the requested provider."""
    return bool(_FALLBACK.search(log_text))


def runtime_for(provider: str) -> tuple[str | None, str | None]:
    """(onnxruntime library to route sherpa-onnx through, or None for its own; a reason CUDA cannot work)."""
    if provider != "cuda":
        return None, None
    bundled = sherpa_runtime_info()
    if bundled.cuda_provider:
        return None, None  # an official CUDA build of sherpa-onnx
    gpu_library = onnxruntime_gpu_library()
    if gpu_library is not None and has_cuda_provider(gpu_library.parent):
        return str(gpu_library), None
    return None, (f"sherpa-onnx's onnxruntime {bundled.version} is a CPU build and no onnxruntime-gpu is "
                  "installed: `pip install onnxruntime-gpu` (matching your CUDA) and nemo2sherpa routes sherpa-onnx "
                  "through it, or install a CUDA build of sherpa-onnx")
