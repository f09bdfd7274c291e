"""The house style, checked: ruff's lint rules and formatter as pyproject.toml configures them.

STYLE.md asks for code the formatter can own (no call packed by hand behind a formatter escape), so the
whole repository is formatted by ``ruff format`` and linted by ``ruff check``. Ruff is in the test extra;
without it these tests skip locally and fail under CI (the environment variable CI set).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]


def ruff(*args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("ruff") is None:
        skip_or_fail("ruff is not installed (pip install -e '.[test]')")
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_lint():
    out = ruff("check", "--no-cache", "--output-format", "concise", ".")
    assert out.returncode == 0, (
        f"ruff check found problems (ruff check --fix . repairs some):\n{out.stdout}{out.stderr}"
    )


def test_formatted():
    out = ruff("format", "--no-cache", "--check", ".")
    assert out.returncode == 0, f"not formatted (run ruff format .):\n{out.stdout}{out.stderr}"


def test_no_formatter_escapes():
    """No ``fmt: skip`` / ``fmt: off``: name the arguments of a long call instead of packing its lines."""
    marker = "fmt" + ":"  # spelled apart so this file does not match itself
    hits = [
        f"{path.relative_to(ROOT)}:{n}"
        for top in ("flame_core", "book", "bench", "scripts", "tests", "data")
        for path in sorted((ROOT / top).rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if f"# {marker} skip" in line or f"# {marker} off" in line
    ]
    assert not hits, f"formatter escapes: {hits}"
