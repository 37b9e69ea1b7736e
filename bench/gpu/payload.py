"""Build the payload of a GPU run here (a machine with NeMo and network), in parts small enough to travel.

The GPU machine this is written for has Python, PyTorch's CUDA libraries, numpy and onnx, but no NeMo, no
sherpa-onnx, no onnxruntime-gpu and no network, and it is reached by commands that each carry a few tens of MB. So
everything that needs NeMo happens here: the fixture is converted (fp32, int8, fp16) and validated on the CPU, which
fills the cache of NeMo references the GPU side then reads; the architectures are converted with random weights and
stripped of their large tensors (bench/gpu/seeded_weights.py regenerates them there, and the dry run of
bench/gpu/run_all.py records the hashes both sides must reproduce). The runtime travels as files: sherpa-onnx,
onnxruntime-gpu and the few pure packages validate needs that the machine lacks.

onnxruntime-gpu's CUDA provider library is 284 MB and compresses to 186 MB, because it carries kernels for every GPU
generation (sm_75 ... sm_120). `--cuda-arch 90` keeps, in every fat binary that has one, only the cubins for that
architecture and drops the others (the fat binary's header is rewritten to the kept entries; offsets do not move), as
a build for that one architecture would; the library then compresses to about 51 MB. Kernels the GPU runs are
byte-identical to the release's. `--cuda-arch all` keeps the library as released.

    python bench/gpu/payload.py                    # -> .gpu-payload/part1, part2, ...

Each part is one call's carry: bench/gpu/device.sh stashes every part but the last, and runs with the last
(docs/cuda.md).
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from seeded_weights import strip  # noqa: E402

ONNXRUNTIME_GPU = "onnxruntime-gpu==1.31.1"
SHERPA_ONNX = ("sherpa-onnx==2.0.1", "sherpa-onnx-core==2.0.1")
# what validate imports that the GPU machine's image lacks (it has numpy, onnx, click, matplotlib, huggingface_hub,
# protobuf, flatbuffers, packaging and nvidia-ml-py)
PURE_EXTRAS = ("jiwer==4.0.0", "rapidfuzz==3.14.6", "soundfile==0.14.0", "cffi==2.1.1", "pycparser==3.12",
               "soxr==1.1.0")
PYTHON_TAG = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PART_LIMIT = 52 * 2 ** 20  # a call carries 64 MiB, the repository (about 8 MB) included

FIXTURE = "tiny-tdt-en"
STREAMING_FIXTURE = "tiny-streaming-en"  # its online directory, streamed on CUDA
# name -> (recipe, extra convert options); all random weights
ARCHITECTURES = {
    "nemotron-streaming": ("nemotron-speech-streaming-en-0.6b", ("--lookahead", "6")),
    "tdt_ctc-110m": ("parakeet-tdt_ctc-110m", ()),
    "tdt-0.6b-v3": ("parakeet-tdt-0.6b-v3", ("--precision", "fp32,int8,int8-dynamic,fp16")),
    "tdt-0.6b-v3-plain": ("parakeet-tdt-0.6b-v3", ("--no-optimize",)),
    "tdt-1.1b": ("parakeet-tdt-1.1b", ()),
}
SPEED_CLIPS = 4  # the architectures' transcripts mean nothing: a few clips feed their speed buckets


def _run(command: list[str], **kwargs) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def _cli(*args: str, env: dict | None = None, check: bool = True) -> int:
    command = [sys.executable, "-m", "nemo2sherpa", *args]
    print("+ nemo2sherpa", " ".join(args), flush=True)
    return subprocess.run(command, env=env, check=check).returncode


def build_models(work: Path, scratch: Path) -> None:
    """Fixture (three precisions, with NeMo references cached) and stripped random-weight architectures."""
    models, cache = work / "models", work / "cache"
    env = {**os.environ, "NEMO2SHERPA_CACHE": str(cache)}
    _cli("convert", FIXTURE, "-o", str(models / "fixture"), "--precision", "fp32,int8,int8-dynamic,fp16",
         "--overwrite", "-q")
    for variant in ("fp32", "int8", "int8-dynamic", "fp16"):
        # exit code 1 is fine here: only the references matter, and the CPU reports are kept for comparison
        _cli("validate", str(models / "fixture"), "--precision", variant, "--provider", "cpu", "--report-dir",
             str(scratch / "cpu-reports" / f"fixture-{variant}"), env=env, check=False)
    _cli("convert", STREAMING_FIXTURE, "-o", str(models / "streaming-fixture"), "--overwrite", "-q")
    _cli("validate", str(models / "streaming-fixture"), "--provider", "cpu", "--no-long-audio", "--report-dir",
         str(scratch / "cpu-reports" / "streaming-fixture"), env=env, check=False)
    for name, (recipe, options) in ARCHITECTURES.items():
        source = scratch / "random" / name
        _cli("convert", recipe, "--random-weights", "-o", str(source), "--overwrite", "-q", *options)
        strip(source, models / name)
        shutil.rmtree(source)
    dataset = ROOT / "src" / "nemo2sherpa" / "fixtures" / FIXTURE / "dataset.jsonl"
    audio = work / "audio"
    (audio / "audio").mkdir(parents=True, exist_ok=True)
    lines = dataset.read_text().splitlines()[:SPEED_CLIPS]
    for line in lines:
        entry = json.loads(line)
        shutil.copy2(dataset.parent / entry["audio"], audio / entry["audio"])
    (audio / "dataset.jsonl").write_text("\n".join(lines) + "\n")


def _download(requirements: tuple[str, ...], target: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
          PYTHON_TAG, "--implementation", "cp", *platforms, "-d", str(target), *requirements])


def keep_cuda_arch(library: Path, arch: int) -> tuple[int, int]:
    """Rewrite, in place, each fat binary of `library` that has a cubin for sm_`arch` to hold only those cubins.

    A fat binary (section .nv_fatbin) is a sequence of containers: a 16-byte header (magic 0xBA55ED50, version,
    header size, size of the entries) then entries, each with its own header (kind, header size, payload size, and
    the SM architecture at byte 28) and payload. The CUDA runtime finds each container through its registration
    wrapper and reads its header; the kept entries are moved to the front and the header's size is updated, the
    rest is zeroed, so no offset outside the container changes. Returns (containers rewritten, bytes dropped).
    """
    data = bytearray(library.read_bytes())
    section_offset, = struct.unpack_from("<Q", data, 0x28)
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, section_offset + i * entry_size) for i in range(count)]
    names = sections[names_index][4]

    def name_of(section) -> str:
        start = names + section[0]
        return data[start:data.index(b"\0", start)].decode()

    fatbin = next((s for s in sections if name_of(s) == ".nv_fatbin"), None)
    if fatbin is None:
        raise SystemExit(f"{library}: no .nv_fatbin section")
    offset, end = fatbin[4], fatbin[4] + fatbin[5]
    rewritten = dropped = 0
    magic = struct.pack("<I", 0xBA55ED50)
    while offset < end:
        offset += -offset % 8
        if data[offset:offset + 4] != magic:
            found = data.find(magic, offset, end)
            if found < 0:
                break
            offset = found
            continue
        _magic, _version, header_size, body_size = struct.unpack_from("<IHHQ", data, offset)
        body, body_end = offset + header_size, offset + header_size + body_size
        entries, cursor = [], body
        while cursor < body_end:
            kind, _entry_version, entry_header, payload = struct.unpack_from("<HHIQ", data, cursor)
            sm = struct.unpack_from("<I", data, cursor + 28)[0]
            entries.append((cursor, kind, entry_header + payload, sm))
            cursor += entry_header + payload
        kept = [e for e in entries if e[1] == 2 and e[3] == arch]
        if kept and len(kept) < len(entries):
            blob = b"".join(bytes(data[start:start + size]) for start, _kind, size, _sm in kept)
            data[body:body_end] = blob + bytes(body_size - len(blob))
            struct.pack_into("<Q", data, offset + 8, len(blob))
            rewritten += 1
            dropped += body_size - len(blob)
        offset = body_end
    library.write_bytes(bytes(data))
    return rewritten, dropped


def build_runtime(files: Path, scratch: Path, cuda_arch: str) -> None:
    wheels = scratch / "wheels"
    _download((ONNXRUNTIME_GPU,), wheels)
    _download(SHERPA_ONNX + PURE_EXTRAS, files)
    wheel = next(wheels.glob("onnxruntime_gpu-*.whl"))
    unpacked = scratch / "onnxruntime-gpu"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    library = unpacked / "onnxruntime" / "capi" / "libonnxruntime_providers_cuda.so"
    if cuda_arch != "all":
        rewritten, dropped = keep_cuda_arch(library, int(cuda_arch))
        print(f"CUDA provider: kept sm_{cuda_arch} in {rewritten} fat binaries, {dropped / 1e6:.0f} MB dropped")
    # the x86 branch filter helps on the library's machine code; preset 9: the decompressor needs only 65 MB
    filters = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 9}]
    with open(library, "rb") as source, lzma.open(files / "onnxruntime-cuda-provider.so.xz", "wb",
                                                  format=lzma.FORMAT_XZ, filters=filters) as sink:
        shutil.copyfileobj(source, sink, 1 << 24)
    library.unlink()
    with tarfile.open(files / "onnxruntime-gpu.tar.xz", "w:xz", preset=9) as archive:
        for item in sorted(unpacked.iterdir()):
            archive.add(item, arcname=item.name)


def pack_work(work: Path, files: Path) -> None:
    with tarfile.open(files / "work.tar.xz", "w:xz", preset=9) as archive:
        for name in ("models", "cache", "audio"):
            archive.add(work / name, arcname=name)


def split_into_parts(files: Path, out: Path, limit: int = PART_LIMIT) -> list[Path]:
    """First-fit decreasing: as few parts (calls) as the sizes allow; every part is stashed whole over there."""
    items = sorted(files.iterdir(), key=lambda p: -p.stat().st_size)
    parts: list[tuple[Path, int]] = []
    for item in items:
        size = item.stat().st_size
        if size > limit:
            raise SystemExit(f"{item}: {size / 2 ** 20:.1f} MiB, over the {limit / 2 ** 20:.0f} MiB a call carries")
        for index, (part, used) in enumerate(parts):
            if used + size <= limit:
                break
        else:
            part = out / f"part{len(parts) + 1}"
            part.mkdir(parents=True)
            parts.append((part, 0))
            index = len(parts) - 1
        shutil.move(str(item), part / item.name)
        parts[index] = (part, parts[index][1] + size)
    return [part for part, _used in parts]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu-payload")
    parser.add_argument("--cuda-arch", default="90", help="SM architecture of the target GPU (90: H100/H200), or all")
    parser.add_argument("--keep-work", action="store_true", help="keep the unpacked models beside the parts")
    args = parser.parse_args(argv)
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    work, files = out / "work", out / "files"
    files.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="nemo2sherpa-payload-", dir=out) as scratch_name:
        scratch = Path(scratch_name)
        build_models(work, scratch)
        shutil.copytree(scratch / "cpu-reports", out / "cpu-reports")
        build_runtime(files, scratch, args.cuda_arch)
    pack_work(work, files)
    if not args.keep_work:
        shutil.rmtree(work)
    parts = split_into_parts(files, out)
    files.rmdir()
    for part in parts:
        print(f"{part.name}: {_size(part) / 2 ** 20:.1f} MiB: {', '.join(sorted(p.name for p in part.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
