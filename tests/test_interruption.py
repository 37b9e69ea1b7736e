"""Interrupted, killed, starved or racing conversions never leave a directory that looks complete, clean up after
themselves (or are cleaned up by the next run), and a rerun succeeds.

- Real `python -m nemo2sherpa convert` processes get SIGINT, SIGTERM or SIGKILL right after each progress stage line
  ('-> name') appears on their stderr. A small sitecustomize (on PYTHONPATH, test-only) holds the process inside the
  named stage until the signal lands, so every stage is hit deterministically; the signal itself is real.
- The final move is attacked line by line: a real SIGINT, or a simulated kill -9 (a forked child that exits on the
  spot), at every line the staging code executes while replacing an existing directory.
- Disk full: a tmpfs of a few megabytes (root) at several sizes, and RLIMIT_FSIZE (anyone).
- Read-only: a read-only tmpfs (root) or a mode-0555 directory (non-root).
- Two conversions into one target at once: one is refused at once, the other completes intact.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import assert_one_line_error, leftovers, run_cli
from nemo2sherpa.errors import UserError
from nemo2sherpa.staging import _held_lock, staged_directory

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "nemo2sherpa" / "fixtures" / "tiny-tdt-en" / "model.nemo"

HOOK = '''
import os, time
_stage = os.environ.get("N2S_TEST_HOLD_STAGE")
if _stage:
    from nemo2sherpa import progress as _progress
    _note = _progress.Progress.note
    def note(self, message):
        _note(self, message)
        if message == "-> " + _stage:
            go = os.environ.get("N2S_TEST_GO_FILE")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (go and os.path.exists(go)):
                time.sleep(0.02)
    _progress.Progress.note = note
'''


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    if not BUNDLED.is_file():
        pytest.skip("the bundled tiny-tdt-en checkpoint is not in this checkout")
    target = tmp_path_factory.mktemp("ckpt") / "model.nemo"
    shutil.copyfile(BUNDLED, target)
    return target


@pytest.fixture(scope="module")
def hook_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hook")
    (directory / "sitecustomize.py").write_text(HOOK)
    return directory


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory) -> tuple[list[str], Path]:
    """The stage lines a conversion of the checkpoint prints, in order, and its output (an in-process conversion)."""
    pytest.importorskip("nemo", reason="NeMo is not installed (the convert extra)")
    import io

    from nemo2sherpa.convert import ConvertOptions, convert
    from nemo2sherpa.progress import Progress

    stream = io.StringIO()
    output = convert(ConvertOptions(source=str(checkpoint), output=tmp_path_factory.mktemp("reference") / "out"),
                     Progress(stream=stream)).output
    names = [line[3:] for line in stream.getvalue().splitlines() if line.startswith("-> ")]
    assert "load weights" in names and "write model directory" in names, names
    return names, output


@pytest.fixture(scope="module")
def stages(reference) -> list[str]:
    return reference[0]


@pytest.fixture(scope="module")
def output_size(reference) -> int:
    """Bytes of a finished model directory: any filesystem smaller than this cannot hold the conversion."""
    return sum(p.stat().st_size for p in reference[1].iterdir())


def complete(directory: Path) -> bool:
    """A model directory whose manifest lists every file it holds, each with the right hash."""
    from nemo2sherpa.manifest import file_problems, read_manifest

    manifest = read_manifest(directory)
    return manifest is not None and not file_problems(directory, manifest.files) and \
        {p.name for p in directory.iterdir()} == {*manifest.files, "manifest.json"}


def big_files(directory: Path, limit: int = 4096) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and p.stat().st_size > limit]


def _env(hook_dir: Path, tmp: Path, **extra: str) -> dict[str, str]:
    tmp.mkdir(parents=True, exist_ok=True)
    python_path = os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": python_path, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", **extra}


def _start(args: list, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nemo2sherpa", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_line(process: subprocess.Popen, wanted: str, timeout: float = 120) -> list[str]:
    """stderr lines up to and including `wanted` (the process keeps running)."""
    seen: list[str] = []
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        for line in process.stderr:
            seen.append(line.rstrip("\n"))
            if seen[-1] == wanted:
                return seen
    finally:
        timer.cancel()
    raise AssertionError(f"{wanted!r} never appeared; stderr: {seen}")


EXPECTED = {signal.SIGINT: (130, "interrupted; nothing was left half-written"),
            signal.SIGTERM: (143, "terminated; nothing was left half-written"),
            signal.SIGKILL: (-signal.SIGKILL, None)}


def _interrupt_at(stage: str, number: signal.Signals, root: Path, checkpoint: Path, hook_dir: Path) -> dict:
    root.mkdir(parents=True)
    env = _env(hook_dir, root / "tmp", N2S_TEST_HOLD_STAGE=stage)
    process = _start(["convert", checkpoint, "-o", root / "out"], env)
    try:
        before = _wait_for_line(process, f"-> {stage}")
        process.send_signal(number)
        _, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return {"stage": stage, "signal": number, "code": process.returncode, "err": "\n".join(before) + "\n" + rest,
            "root": root}


def _check_interrupted(result: dict) -> None:
    code, message = EXPECTED[result["signal"]]
    where = f"{result['signal'].name} at '{result['stage']}'"
    root = result["root"]
    assert result["code"] == code, (where, result["err"][-2000:])
    assert "Traceback" not in result["err"], (where, result["err"][-3000:])
    assert not (root / "out").exists(), f"{where}: a target directory exists"
    if message is not None:
        # click turns a KeyboardInterrupt inside a command into Abort ('aborted'); both mean exit 130
        assert message in result["err"] or (code == 130 and "nemo2sherpa: aborted" in result["err"]), \
            (where, result["err"][-1000:])
        assert leftovers(root, "out") == [], f"{where}: {leftovers(root, 'out')}"


@pytest.mark.nemo
def test_real_signals_to_a_real_process_leave_nothing_half_written(stages, checkpoint, hook_dir, tmp_path, capsys):
    """SIGINT while loading the weights, SIGTERM while exporting, kill -9 in the last stage (the directory is all
    written but for its manifest): exit 130/143/-9, no target, nothing in TMPDIR, and a rerun succeeds."""
    export = next(stage for stage in stages if stage.startswith("export"))
    cases = [("load weights", signal.SIGINT), (export, signal.SIGTERM), (stages[-1], signal.SIGKILL)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda i: _interrupt_at(*cases[i], tmp_path / f"case{i}", checkpoint, hook_dir),
                                range(len(cases))))
    for result in results:
        _check_interrupted(result)
        assert big_files(result["root"] / "tmp") == [], f"{result['stage']}: model data left in TMPDIR"
    killed = [r for r in results if r["signal"] == signal.SIGKILL]
    assert all(leftovers(r["root"], "out") for r in killed)  # a kill leaves its partial directory (and lock file)
    for result in results[1:]:  # the next run cleans up and succeeds (in-process: NeMo is imported once)
        ran = run_cli(["convert", checkpoint, "-o", result["root"] / "out", "-q"], capsys)
        assert ran.code == 0, ran.err
        assert complete(result["root"] / "out") and leftovers(result["root"], "out") == []
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # run_cli installed the CLI's handler in this process


@pytest.mark.nemo
def test_sigint_and_sigterm_at_every_stage_leave_nothing_half_written(stages, checkpoint, tmp_path, capsys,
                                                                      monkeypatch):
    """The CLI in this process (NeMo imported once), a real signal sent to itself right after each stage line:
    SIGINT and SIGTERM in turn, through every stage."""
    from nemo2sherpa import progress

    original = progress.Progress.note
    try:
        for index, stage in enumerate(stages):
            number = (signal.SIGINT, signal.SIGTERM)[index % 2]

            def note(self, message, stage=stage, number=number):
                original(self, message)
                if message == f"-> {stage}":
                    os.kill(os.getpid(), number)
                    time.sleep(10)  # the handler raises during the sleep

            monkeypatch.setattr(progress.Progress, "note", note)
            root = tmp_path / f"stage{index}"
            root.mkdir()
            ran = run_cli(["convert", checkpoint, "-o", root / "out", "-q"], capsys)
            _check_interrupted({"stage": stage, "signal": number, "code": ran.code, "err": ran.err, "root": root})
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        monkeypatch.setattr(progress.Progress, "note", original)


# ----------------------------------------------------------------------------------- the final move, line by line

def _fill(directory: Path, label: str) -> None:
    (directory / "a.bin").write_bytes(label.encode() * 1000)
    (directory / "label.txt").write_text(label)
    (directory / "sub").mkdir()
    (directory / "sub" / "b.txt").write_text(label)


def _label(directory: Path) -> str | None:
    """'old' or 'new' for a directory that is one of the two, whole; None when absent; 'broken' otherwise."""
    if not directory.exists():
        return None
    try:
        label = (directory / "label.txt").read_text()
        whole = (directory / "a.bin").read_bytes() == label.encode() * 1000 and \
            (directory / "sub" / "b.txt").read_text() == label
    except OSError:
        return "broken"
    return label if whole and label in ("old", "new") else "broken"


class _LineTrigger:
    """Calls `action` at the n-th line executed in nemo2sherpa/staging.py (a signal or a kill at that point)."""

    def __init__(self, n: int, action) -> None:
        import nemo2sherpa.staging as staging

        self.file = staging.__file__
        self.n, self.count, self.action, self.fired = n, 0, action, False

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename != self.file:
            return None
        if event == "line" and not self.fired:
            self.count += 1
            if self.count == self.n:
                self.fired = True
                self.action()
        return self


def _replace_with_trigger(target: Path, trigger: _LineTrigger) -> None:
    """Stage a 'new' directory for `target` (overwrite) and count lines from the moment it is complete."""
    try:
        with staged_directory(target, overwrite=True) as partial:
            _fill(partial, "new")
            sys.settrace(trigger)
    finally:
        sys.settrace(None)


@pytest.mark.parametrize("fresh", [False, True], ids=["replace", "create"])
def test_sigint_at_any_line_of_the_final_move_keeps_old_or_new_whole(tmp_path, fresh):
    """Without --overwrite the target is absent or new; with it, old or new: never missing, never mixed."""
    target = tmp_path / "model"
    outcomes = set()
    for n in range(1, 400):
        if not fresh:
            if target.exists():
                shutil.rmtree(target)
            target.mkdir()
            _fill(target, "old")
        elif target.exists():
            shutil.rmtree(target)
        trigger = _LineTrigger(n, lambda: os.kill(os.getpid(), signal.SIGINT))
        try:
            _replace_with_trigger(target, trigger)
        except KeyboardInterrupt:
            interrupted = True
        else:
            interrupted = False
        state = _label(target)
        outcomes.add(state)
        assert state in ((None, "new") if fresh else ("old", "new")), (n, state)
        assert not interrupted or state != "broken"
        if not trigger.fired:
            break  # the whole move ran without reaching line n: every line has been tried
    else:
        raise AssertionError("the final move never finished")
    assert "new" in outcomes
    with staged_directory(tmp_path / "model", overwrite=True) as partial:  # the next run cleans up whatever is left
        _fill(partial, "new")
    assert leftovers(tmp_path, "model") == [] and _label(target) == "new"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_kill_9_at_any_line_of_the_final_move_keeps_old_or_new_whole(tmp_path):
    target = tmp_path / "model"
    seen = set()
    for n in range(1, 400):
        if target.exists():
            shutil.rmtree(target)
        for stale in leftovers(tmp_path, "model"):
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
        target.mkdir()
        _fill(target, "old")
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                trigger = _LineTrigger(n, lambda: os._exit(137))
                _replace_with_trigger(target, trigger)
                code = 0 if trigger.fired else 3
            except BaseException:
                code = 4
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        assert code in (0, 3, 137), code
        state = _label(target)
        seen.add(state)
        assert state in ("old", "new"), (n, state, leftovers(tmp_path, "model"))
        if code == 3:
            break
    else:
        raise AssertionError("the final move never finished")
    assert seen == {"old", "new"}
    with staged_directory(target, overwrite=True) as partial:
        _fill(partial, "new")
    assert leftovers(tmp_path, "model") == [] and _label(target) == "new"


# ----------------------------------------------------------------------------------- locks

def test_a_lock_file_replaced_between_open_and_flock_is_not_trusted(tmp_path, monkeypatch):
    """The writer before us unlinks the lock on its way out. If that happens between our open() and our flock(),
    our lock is on a dead file while a third writer may hold the live one: we must notice and retry."""
    import fcntl

    import nemo2sherpa.staging as staging

    target = tmp_path / "model"
    lock_path = tmp_path / ".model.lock"
    lock_path.write_text("")
    third: list = []
    real_flock = fcntl.flock

    def flock(fd, operation):
        if not third:  # first call: the old holder leaves, a third writer takes a fresh lock file
            lock_path.unlink()
            handle = open(lock_path, "a+")
            real_flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            third.append(handle)
        return real_flock(fd, operation)

    monkeypatch.setattr(staging.fcntl, "flock", flock)
    with pytest.raises(UserError, match="another nemo2sherpa process is writing"):
        with _held_lock(target):
            pass
    third[0].close()
    monkeypatch.setattr(staging.fcntl, "flock", real_flock)
    with _held_lock(target):
        pass
    assert not lock_path.exists()


@pytest.mark.nemo
def test_two_conversions_into_one_target_at_once(checkpoint, hook_dir, tmp_path):
    """The first holds the lock (kept inside 'load weights'); the second is refused at once, with and without
    --overwrite; the first then completes, intact."""
    go = tmp_path / "go"
    first = _start(["convert", checkpoint, "-o", tmp_path / "out"],
                   _env(hook_dir, tmp_path / "tmp1", N2S_TEST_HOLD_STAGE="load weights", N2S_TEST_GO_FILE=str(go)))
    try:
        _wait_for_line(first, "-> load weights")
        env = _env(hook_dir, tmp_path / "tmp2")
        seconds = [_start(["convert", checkpoint, "-o", tmp_path / "out", *extra], env)
                   for extra in ([], ["--overwrite"])]
        for second in seconds:
            out, err = second.communicate(timeout=120)
            assert second.returncode == 1, err
            assert "another nemo2sherpa process is writing this directory right now" in err and "Traceback" not in err
        assert not (tmp_path / "out").exists()
        go.touch()
        out, rest = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, rest
    assert complete(tmp_path / "out") and leftovers(tmp_path, "out") == []


# ----------------------------------------------------------------------------------- disk full, read-only

@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str, read_only: bool = False):
    """A small tmpfs at `where`, or a skip saying why there cannot be one."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small filesystem needs root (the RLIMIT_FSIZE test covers disk-full for others)")
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.nemo
@pytest.mark.parametrize("fraction, external", [(0.0, False), (0.5, False), (0.95, False), (0.5, True)])
def test_a_full_disk_is_one_line_and_leaves_nothing(checkpoint, output_size, tmp_path, capsys, fraction, external):
    """Filesystems smaller than the result run out at different stages (tokenizer files, export, the graphs; with
    external data, in the thread that writes the encoder's weights during its export)."""
    size = f"{max(64 * 1024, int(output_size * fraction)) // 1024}k"
    layout = ["--external-data-above", "0"] if external else []
    with mounted_tmpfs(tmp_path / "small", size) as small:
        ran = run_cli(["convert", checkpoint, "-o", small / "out", "-q", *layout], capsys)
        assert_one_line_error(ran, str(small / "out"), "no space left on the device", "nothing was kept")
        assert list(small.iterdir()) == []
    with mounted_tmpfs(tmp_path / "large", "64m") as large:
        ran = run_cli(["convert", checkpoint, "-o", large / "out", "-q"], capsys)
        assert ran.code == 0, ran.err
        assert complete(large / "out") and leftovers(large, "out") == []


@pytest.mark.nemo
def test_a_full_disk_while_unpacking_a_compressed_checkpoint_blames_the_disk(checkpoint, tmp_path, capsys):
    import gzip

    compressed = tmp_path / "model.nemo"
    compressed.write_bytes(gzip.compress(checkpoint.read_bytes(), compresslevel=1))
    with mounted_tmpfs(tmp_path / "small", "1m") as small:
        ran = run_cli(["convert", compressed, "-o", small / "out", "-q"], capsys)
        assert_one_line_error(ran, str(small / "out"), "no space left on the device")
        assert "truncated" not in ran.err and list(small.iterdir()) == []


@pytest.mark.nemo
def test_a_file_size_limit_is_one_line_and_leaves_nothing(checkpoint, reference, tmp_path, capsys):
    """RLIMIT_FSIZE (ulimit -f): writes past it fail with EFBIG (Python ignores SIGXFSZ). Works without root."""
    largest = max(p.stat().st_size for p in reference[1].iterdir())
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest // 2, hard))
        ran = run_cli(["convert", checkpoint, "-o", tmp_path / "out", "-q"], capsys)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert_one_line_error(ran, "out", "file size limit", "nothing was kept")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []
    ran = run_cli(["convert", checkpoint, "-o", tmp_path / "out", "-q"], capsys)
    assert ran.code == 0 and complete(tmp_path / "out")


@contextlib.contextmanager
def read_only_directory(where: Path):
    if os.geteuid() == 0:
        with mounted_tmpfs(where, "1m", read_only=True):
            yield where
        return
    where.mkdir()
    where.chmod(0o555)
    try:
        yield where
    finally:
        where.chmod(0o755)


@pytest.mark.nemo
def test_a_read_only_place_is_one_line_and_leaves_nothing(checkpoint, tmp_path, capsys):
    with read_only_directory(tmp_path / "ro") as ro:
        ran = run_cli(["convert", checkpoint, "-o", ro / "out", "-q"], capsys)
        assert_one_line_error(ran, str(ro), "cannot write here")
        ran = run_cli(["convert", checkpoint, "-o", ro / "deeper" / "out", "-q"], capsys)
        assert_one_line_error(ran, "deeper", "cannot be created")
        assert list(ro.iterdir()) == []


def test_missing_parents_created_for_a_failed_run_are_removed(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError):
        with staged_directory(target) as partial:
            (partial / "x").write_text("x")
            raise RuntimeError("failed half-way")
    assert list(tmp_path.iterdir()) == []
