"""Routing sherpa-onnx through another onnxruntime (nemo2sherpa.validate.ort_runtime), checked on CPU.

A GPU user routes sherpa-onnx through onnxruntime-gpu's library; here the same code path forwards to the CPU
onnxruntime of the `onnxruntime` Python package, which differs in version from the one bundled with sherpa-onnx, so
which runtime sherpa-onnx really used is visible. Everything that imports sherpa_onnx runs in a child interpreter:
the onnxruntime is fixed for a process at import time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nemo2sherpa.errors import UserError
from nemo2sherpa.validate import ort_runtime

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF/dlopen routing is Linux only")

needs_sherpa = pytest.mark.skipif(importlib.util.find_spec("sherpa_onnx") is None,
                                  reason="sherpa-onnx is not installed (the validate extra)")


def _compiler_missing() -> str | None:
    try:
        ort_runtime._compiler()
    except UserError as exc:
        return str(exc)
    return None


needs_cc = pytest.mark.skipif(_compiler_missing() is not None, reason=f"no C compiler: {_compiler_missing()}")


@pytest.fixture(scope="session")
def bundled() -> ort_runtime.RuntimeInfo:
    if importlib.util.find_spec("sherpa_onnx") is None:
        pytest.skip("sherpa-onnx is not installed (the validate extra)")
    return ort_runtime.sherpa_runtime_info()


@pytest.fixture(scope="session")
def python_ort_library() -> Path:
    library = ort_runtime.onnxruntime_gpu_library()
    if library is None:
        pytest.skip("the installed onnxruntime package ships no capi/libonnxruntime.so.* to forward to")
    return library


@pytest.fixture(scope="session")
def python_ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


@pytest.fixture(scope="session")
def shim(bundled, python_ort_library, tmp_path_factory) -> Path:
    if _compiler_missing():
        pytest.skip(f"no C compiler: {_compiler_missing()}")
    return ort_runtime.build_shim(python_ort_library, bundled.required_symbol_version,
                                  cache_dir=tmp_path_factory.mktemp("ort-shim"),
                                  required_symbols=bundled.required_symbols)


CHILD = r"""
import json, sys
from pathlib import Path
from nemo2sherpa.validate import ort_runtime

shim, model, audio, provider = sys.argv[1:5]
out = {}
if shim:
    out["preloaded_version"] = ort_runtime.preload_runtime(Path(shim))
import sherpa_onnx  # noqa: F401 - binds the extension to whatever libonnxruntime.so is loaded now
out["after_import"] = ort_runtime.loaded_runtime_summary()
if model:
    import numpy as np
    from nemo2sherpa.validate.model_dir import open_model_dir
    from nemo2sherpa.validate.sherpa_runner import make_recognizer, transcribe

    with ort_runtime.captured_fd_stderr() as log:
        recognizer = make_recognizer(open_model_dir(Path(model)), provider=provider)
    out["log"] = log.text
    out["fallback"] = ort_runtime.fallback_detected(log.text)
    if audio:
        result = transcribe(recognizer, np.load(audio))
        out["text"], out["tokens"] = result.text, result.tokens
    out["runtime"] = ort_runtime.loaded_runtime_summary()
print(json.dumps(out))
"""


def run_child(shim: Path | None, model: Path | None = None, audio: Path | None = None,
              provider: str = "cpu") -> dict:
    env = dict(os.environ)
    env.pop(ort_runtime.TARGET_ENV, None)
    done = subprocess.run([sys.executable, "-c", CHILD, str(shim or ""), str(model or ""), str(audio or ""), provider],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- reading the files


@needs_sherpa
def test_runtime_info_names_the_bundled_library(bundled):
    package = Path(next(iter(importlib.util.find_spec("sherpa_onnx").submodule_search_locations)))
    assert bundled.extension.name.startswith("_sherpa_onnx") and bundled.extension.is_file()
    assert bundled.library == (package / "lib" / "libonnxruntime.so").resolve()
    assert bundled.required_symbols == ("OrtGetApiBase",)
    assert re.fullmatch(r"VERS_\d+\.\d+\.\d+", bundled.required_symbol_version)
    # sherpa-onnx is linked against the onnxruntime it bundles: the version string matches the symbol version
    assert bundled.version and bundled.required_symbol_version == f"VERS_{bundled.version}"
    assert bundled.cuda_provider is False  # the PyPI wheel is a CPU build


@needs_sherpa
def test_required_symbol_version_matches_binutils(bundled):
    """The pure-Python ELF reader agrees with nm/readelf about what the extension imports."""
    if shutil.which("nm"):
        listing = subprocess.run(["nm", "-D", "--undefined-only", str(bundled.extension)],
                                 capture_output=True, text=True, check=True).stdout
    elif shutil.which("readelf"):
        listing = subprocess.run(["readelf", "-W", "--dyn-syms", str(bundled.extension)],
                                 capture_output=True, text=True, check=True).stdout
    else:
        pytest.skip("neither nm nor readelf (binutils) is installed: no second opinion on the ELF reader")
    found = re.findall(r"\bOrtGetApiBase@(\w[\w.]*)", listing)
    assert found and found[0] == bundled.required_symbol_version
    if shutil.which("readelf"):
        dynamic = subprocess.run(["readelf", "-d", str(bundled.extension)], capture_output=True, text=True,
                                 check=True).stdout
        elf = ort_runtime.read_elf_dynamic(bundled.extension)
        assert re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", dynamic) == list(elf.needed)


def test_onnxruntime_library_of_the_python_package(python_ort_library, python_ort_version):
    assert python_ort_library.name.startswith("libonnxruntime.so")
    assert ort_runtime.library_version(python_ort_library) == python_ort_version
    elf = ort_runtime.read_elf_dynamic(python_ort_library)
    assert elf.defined["OrtGetApiBase"] == f"VERS_{python_ort_version}"
    assert ort_runtime.has_cuda_provider(python_ort_library.parent) == \
        (python_ort_library.parent / "libonnxruntime_providers_cuda.so").is_file()


def test_has_cuda_provider(tmp_path):
    assert not ort_runtime.has_cuda_provider(tmp_path)
    (tmp_path / "libonnxruntime_providers_cuda.so").write_bytes(b"")
    assert ort_runtime.has_cuda_provider(tmp_path)


# ---------------------------------------------------------------------------------------------- building the shim


@needs_cc
def test_shim_exports_the_required_version_under_the_onnxruntime_soname(shim, bundled, python_ort_library):
    assert shim.name == "libonnxruntime.so"
    elf = ort_runtime.read_elf_dynamic(shim)
    assert elf.soname == "libonnxruntime.so"
    assert elf.defined["OrtGetApiBase"] == bundled.required_symbol_version
    assert set(elf.defined) >= {"OrtGetApiBase", "nemo2sherpa_ort_shim_calls", "nemo2sherpa_ort_shim_target"}
    if shutil.which("nm"):
        exported = subprocess.run(["nm", "-D", "--defined-only", str(shim)], capture_output=True, text=True,
                                  check=True).stdout
        assert f"OrtGetApiBase@@{bundled.required_symbol_version}" in exported
    # reused, not rebuilt; another version is another build
    stamp = shim.stat().st_mtime_ns
    again = ort_runtime.build_shim(python_ort_library, bundled.required_symbol_version, cache_dir=shim.parent.parent)
    assert again == shim and again.stat().st_mtime_ns == stamp
    other = ort_runtime.build_shim(python_ort_library, "VERS_1.1.0", cache_dir=shim.parent.parent)
    assert other != shim and ort_runtime.read_elf_dynamic(other).defined["OrtGetApiBase"] == "VERS_1.1.0"


def test_build_shim_without_a_compiler_says_what_to_install(python_ort_library, tmp_path, monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="no C compiler.*install"):
        ort_runtime.build_shim(python_ort_library, "VERS_1.28.2", cache_dir=tmp_path)


@needs_cc
def test_build_shim_refusals(python_ort_library, tmp_path):
    with pytest.raises(UserError, match="older than"):
        ort_runtime.build_shim(python_ort_library, "VERS_99.0.0", cache_dir=tmp_path)
    with pytest.raises(UserError, match="OrtSomethingElse"):
        ort_runtime.build_shim(python_ort_library, "VERS_1.28.2", cache_dir=tmp_path,
                               required_symbols=("OrtGetApiBase", "OrtSomethingElse"))
    with pytest.raises(UserError, match="not found"):
        ort_runtime.build_shim(tmp_path / "missing.so", "VERS_1.28.2", cache_dir=tmp_path)
    not_ort = tmp_path / "libnot.so"
    not_ort.write_bytes(b"\x7fELF-but-not-really")
    with pytest.raises(UserError, match="ELF"):
        ort_runtime.build_shim(not_ort, "VERS_1.28.2", cache_dir=tmp_path)


def test_preload_refuses_after_sherpa_import(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sherpa_onnx", object())
    with pytest.raises(RuntimeError, match="before `import sherpa_onnx`"):
        ort_runtime.preload_runtime(tmp_path / "libonnxruntime.so")


# ------------------------------------------------------------------------------------ what sherpa-onnx really uses


@needs_cc
def test_sherpa_imports_through_the_shim(shim, bundled, python_ort_version):
    routed = run_child(shim)
    assert routed["preloaded_version"] == python_ort_version
    runtime = routed["after_import"]
    assert runtime["onnxruntime_version"] == python_ort_version != bundled.version
    assert runtime["shim"] == str(shim.resolve())
    assert runtime["shim_calls"] >= 1  # sherpa-onnx's C++ wrapper fetched the API table through the shim
    assert runtime["bundled_library_mapped"] is False  # the bundled onnxruntime never entered the process

    plain = run_child(None)["after_import"]
    assert plain["onnxruntime_version"] == bundled.version
    assert plain["shim"] is None and plain["bundled_library_mapped"] is True


@needs_cc
def test_shim_target_can_be_overridden_and_a_bad_one_is_explained(shim):
    code = ("import sys; from pathlib import Path; from nemo2sherpa.validate import ort_runtime\n"
            "try:\n    print(ort_runtime.preload_runtime(Path(sys.argv[1])))\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    env = dict(os.environ, **{ort_runtime.TARGET_ENV: "/nonexistent/libonnxruntime.so.1.0.0"})
    done = subprocess.run([sys.executable, "-c", code, str(shim)], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.stdout.startswith("UserError") and "/nonexistent/libonnxruntime.so.1.0.0" in done.stdout, done


@pytest.fixture(scope="module")
def model_and_audio(converted, signal, tmp_path_factory) -> tuple[Path, Path]:
    audio = tmp_path_factory.mktemp("ort-audio") / "signal.npy"
    np.save(audio, signal)
    return converted["tdt-80"], audio


@needs_cc
@pytest.mark.nemo
@pytest.mark.slow
def test_decoding_through_the_shim_matches_the_bundled_runtime(shim, model_and_audio, python_ort_version, bundled):
    model, audio = model_and_audio
    routed = run_child(shim, model, audio)
    plain = run_child(None, model, audio)
    assert routed["runtime"]["onnxruntime_version"] == python_ort_version
    assert routed["runtime"]["bundled_library_mapped"] is False
    assert plain["runtime"]["onnxruntime_version"] == bundled.version
    assert routed["tokens"] == plain["tokens"]
    assert routed["text"] == plain["text"]
    assert not routed["fallback"] and not plain["fallback"]


@pytest.mark.nemo
@pytest.mark.slow
@pytest.mark.parametrize("routed", [False, True], ids=["bundled", "shim"])
def test_cuda_request_on_a_cpu_runtime_is_detected(routed, request, model_and_audio, python_ort_version):
    model, _ = model_and_audio
    shim = None
    if routed:
        if _compiler_missing():
            pytest.skip(f"no C compiler: {_compiler_missing()}")
        shim = request.getfixturevalue("shim")
    result = run_child(shim, model, provider="cuda")
    assert result["fallback"], result["log"]
    messages = ort_runtime.fallback_messages(result["log"])
    assert len(messages) >= 1 and all("Fallback to cpu" in m for m in messages), result["log"]
    if routed:
        import onnxruntime

        # sherpa-onnx's own GetAvailableProviders() answered from the forwarded runtime: its list is the Python
        # package's (1.32 lists AzureExecutionProvider, the bundled 1.28.2 does not)
        listed = re.search(r"Available providers: (.*?)\.? Fallback to cpu", messages[0]).group(1)
        assert [p for p in listed.split(", ") if p.strip(" ,")] == onnxruntime.get_available_providers()
        assert result["runtime"]["onnxruntime_version"] == python_ort_version
        assert result["runtime"]["shim"] and result["runtime"]["shim_calls"] >= 1


# ---------------------------------------------------------------------------------------------- C-level logging


def test_captured_fd_stderr_sees_c_level_writes():
    libc = __import__("ctypes").CDLL(None)
    with ort_runtime.captured_fd_stderr() as captured:
        os.write(2, b"written to fd 2\n")
        libc.fputs(b"from C stdio\n", __import__("ctypes").c_void_p.in_dll(libc, "stderr"))
    assert "written to fd 2" in captured.text
    assert "from C stdio" in captured.text


def test_captured_fd_stderr_restores_fd_2_on_error():
    before = os.fstat(2)
    with pytest.raises(ValueError), ort_runtime.captured_fd_stderr() as captured:
        os.write(2, b"before the error\n")
        raise ValueError("boom")
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)
    assert captured.text == "before the error\n"


def test_fallback_detected_on_sherpa_messages():
    lines = [
        ("/project/sherpa-onnx/csrc/session.cc:GetSessionOptionsImpl:437 Please compile with "
         "-DSHERPA_ONNX_ENABLE_GPU=ON. Available providers: AzureExecutionProvider, CPUExecutionProvider, . "
         "Fallback to cpu!"),
        ("Failed to enable CUDA: libcudnn.so.9: cannot open shared object file. Available providers: "
         "CUDAExecutionProvider, CPUExecutionProvider, . Fallback to cpu"),
        "Unsupported string: cudaa. Fallback to cpu",
    ]
    for line in lines:
        assert ort_runtime.fallback_detected(f"noise\n{line}\nmore noise\n")
    assert ort_runtime.fallback_messages("a\n" + lines[0]) == [lines[0]]
    assert not ort_runtime.fallback_detected("")
    assert not ort_runtime.fallback_detected("Failed to enable TensorRT : x.Available providers: y. Fallback to cuda")


def test_fallback_message_keeps_the_onnxruntime_reason():
    # seen with onnxruntime-gpu 1.31.1 behind the shim on a machine without CUDA libraries: onnxruntime's error
    # text carries a newline, so sherpa-onnx's message spans two lines
    log = ("/project/sherpa-onnx/csrc/session.cc:AppendCudaProviderV2:198 Failed to enable CUDA: "
           "/onnxruntime_src/onnxruntime/core/session/provider_bridge_ort.cc:2043 onnxruntime::Provider& "
           "onnxruntime::ProviderLibrary::Get() [ONNXRuntimeError] : 1 : FAIL : Failed to load library "
           ".../capi/libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object "
           "file: No such file or directory\n. Available providers: TensorrtExecutionProvider, "
           "CUDAExecutionProvider, CPUExecutionProvider, . Fallback to cpu\n")
    assert ort_runtime.fallback_detected(log)
    [message] = ort_runtime.fallback_messages(log)
    assert "Failed to enable CUDA" in message and "libcublasLt.so.13" in message and message.endswith("Fallback to cpu")
