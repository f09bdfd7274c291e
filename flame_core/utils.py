"""Small shared helpers: the one seeding function, device resolution, the machine a run's seconds come from,
keeping freed memory for reuse (CPU training), atomic file writes, a file lock, file digests, the code's git
revision and machine-independent command lines for provenance."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import platform
import random
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA). Called explicitly by the CLI, the engine and chapters."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else is passed to torch.device (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu or auto")
    return dev


def machine_name(device: torch.device) -> str:
    """The hardware that times a run on `device`: the GPU's name on CUDA, else the CPU's model name (Linux's
    /proc/cpuinfo; `platform`'s answer elsewhere, often only the architecture)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_process(processes: int) -> int:
    """torch's intra-op threads for each of `processes` processes sharing this machine's cores (at least one)."""
    return max(1, usable_cores() // processes)


def machine_fingerprint(device: torch.device) -> dict:
    """What decides whether two runs' seconds compare: the hardware's name, the cores this process may use
    and torch's intra-op threads. No host name and no path, so records stay free of the machine's identity."""
    return {"name": machine_name(device), "cores": usable_cores(), "threads": torch.get_num_threads()}


def git_revision(cwd: str | Path | None = None) -> str:
    """The commit checked out at `cwd`, with '+dirty' when the files under `cwd` differ from it (changed, or
    new and not ignored), so a run names the code it ran: records and benchmark results written elsewhere in
    the repository leave it clean. 'unknown' outside git.

    Without `cwd`: this package's revision as this process first asked for it (the command line asks as it
    starts), and the same answer after: a process runs the code it imported, so a run that trains for hours
    while commits land beside it still names the code it runs."""
    return _revision(cwd) if cwd is not None else _package_revision()


@functools.cache
def _package_revision() -> str:
    return _revision(Path(__file__).parent)


def _revision(cwd: str | Path) -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel; True if it did.

    A CPU training step allocates and frees tensors of a few MB (the scores of a batch over every item are
    B x 12k floats on Amazon data). glibc serves each from a fresh mapping (or trims its heap after the free),
    so every step touches those pages anew: about 6,000 page faults and 10% of a FLAME step on amazon-toys.
    Raising the mapping threshold to glibc's maximum (32 MB) and never trimming makes the allocator reuse
    what it freed. Peak memory barely changes, as each step frees what it allocated (522 against 521 MB over
    33 FLAME steps on amazon-toys); memory freed at the end of training is kept by the process, not returned.
    Process-wide and idempotent; a no-op elsewhere than glibc (macOS, musl), where it returns False. The
    engine calls it when it trains on the CPU.
    """
    if platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def cache_dir() -> Path:
    """$FLAME_CACHE_DIR, else ~/.cache/flame_core: pretrained anchors, and fetched datasets by default."""
    return Path(os.environ.get("FLAME_CACHE_DIR") or Path.home() / ".cache" / "flame_core")


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write a file so that readers see the old or the new content, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_json(path: str | os.PathLike, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj, previous: str | os.PathLike | None = None) -> None:
    """torch.save through a temporary file and os.replace. `previous`: the file `path` held before is renamed
    there, once the new one is complete on disk (so one of the two names always holds a complete file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, log: Callable[[str], None] | None = None):
    """Hold an exclusive advisory lock on `path` (created if needed) while the block runs.

    Processes that share a cache (the book's chapters, executed in parallel) wait for each other here
    instead of training the same run or anchor twice into the same folder; `log`, when given, says once that
    this process is waiting and for which lock, so that a wait of hours is never silent. Without fcntl
    (Windows) this is a no-op.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux or macOS
        yield
        return
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"waiting for {path.name}: another process holds it (it trains the same run or anchor)")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """16 hex digits of a state dict's names, dtypes, shapes and values: the same weights give the same digest
    whatever file holds them or wherever they were trained, so records can show which runs shared a network."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def portable_command(argv: list[str], cwd: str | os.PathLike | None = None) -> str:
    """A command line for a record: every absolute path (also in ``--opt=/path``) made relative to `cwd`
    (default: the working directory), so a record names no folder of the machine that ran it."""
    cwd = Path(cwd or os.getcwd())

    def relative(token: str) -> str:
        head, sep, tail = token.partition("=") if token.startswith("--") else ("", "", token)
        if os.path.isabs(tail):
            tail = os.path.relpath(tail, cwd)
        return head + sep + tail

    return shlex.join(relative(t) for t in argv)
