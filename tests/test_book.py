"""The FLAME Book as scripts/build_book.py built it: each chapter's metrics and its rendered HTML page.

The build (``python scripts/build_book.py quick --jobs 2``; CI runs it before pytest) writes _build/book.json
with the chapters it built. Without that file every test here that needs the build skips with the reason,
so a unit-only run works on a fresh checkout; under CI (the environment variable CI set) a missing build
or a missing Chromium fails instead, so the book can never pass CI by being skipped. After a build, a chapter
it lists that failed, lacks its metrics.json, fails a check, or whose page does not render its figures fails
here.

Each chapter writes _build/outputs/NN_name/metrics.json with a ``"checks"`` list of
``{"name", "value", "op", "bound"}`` (op one of > >= < <= ==), asserted generically by test_chapter_checks.
EXTRA adds this file's own checks per chapter: one entry per chapter, a list of (dotted key in
metrics.json, op, bound, why).
"""

from __future__ import annotations

import json
import operator
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
MANIFEST = BUILD / "book.json"
HTML = BUILD / "html"
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq}
BUILD_HINT = "the book has not been built: run `python scripts/build_book.py quick --jobs 2` first"
EXTRA = {  # a fourth field "cpu" or "cuda" limits a check to books built on that device
    "06_efficiency": [
        ("live_bench.flame_over_single", "<", 6, "a FLAME step costs a small multiple of a Single step"),
        ("live_bench.flame_packed_speedup", ">", 1.0, "the packed layout is faster than the padded one", "cpu"),
        (
            "bench_files",
            "==",
            sorted(p.name for p in (ROOT / "bench" / "results").glob("speed-*.json")),
            "every committed speed benchmark is read",
        ),
    ],
}


def toc_chapters() -> list[str]:
    """The .py chapters named in _toc.yml, in order (without the yaml package: its lines are simple)."""
    files = re.findall(r"^\s*-?\s*file:\s*(\S+)", (ROOT / "_toc.yml").read_text(), flags=re.M)
    return [Path(f).name for f in files if (ROOT / f"{f}.py").exists()]


def manifest() -> dict:
    if not MANIFEST.exists():
        skip_or_fail(BUILD_HINT)
    return json.loads(MANIFEST.read_text())


def built(chapter: str) -> dict:
    """The manifest entry of a chapter; skips if the last build did not include it."""
    entry = manifest()["chapters"].get(chapter)
    if entry is None:
        skip_or_fail(f"{chapter} was not part of the last book build ({MANIFEST})")
    return entry


def metrics(chapter: str) -> dict:
    entry = built(chapter)
    path = BUILD / "outputs" / chapter / "metrics.json"
    assert path.exists(), f"{chapter}: no {path.relative_to(ROOT)} (build status: {entry['status']})"
    return json.loads(path.read_text())


def lookup(data: dict, dotted: str):
    for key in dotted.split("."):
        data = data[key]
    return data


def test_every_chapter_file_is_in_the_toc():
    chapters = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.py"))
    missing = sorted(set(chapters) - set(toc_chapters()))
    assert not missing, f"chapters under book/ that _toc.yml does not list (they would never be built): {missing}"


@pytest.mark.parametrize("chapter", toc_chapters())
def test_chapter_built(chapter):
    entry = built(chapter)
    assert entry["status"] == "ok", f"{chapter}: {entry['status']} (see the build log)"


@pytest.mark.parametrize("chapter", toc_chapters())
def test_chapter_checks(chapter):
    checks = metrics(chapter).get("checks")
    assert checks, f"{chapter}: metrics.json has no 'checks' list"
    failed = []
    for c in checks:
        assert c.get("op") in OPS, f"{chapter}: check {c.get('name')!r} has an unknown op {c.get('op')!r}"
        if c["value"] is None or not OPS[c["op"]](c["value"], c["bound"]):
            failed.append(f"{c['name']}: {c['value']} {c['op']} {c['bound']} is false")
    assert not failed, f"{chapter}: " + "; ".join(failed)


@pytest.mark.parametrize("chapter", sorted(EXTRA))
def test_chapter_extra_checks(chapter):
    if chapter not in toc_chapters():
        pytest.skip(f"{chapter} is not in _toc.yml")
    data = metrics(chapter)
    for key, op, bound, why, *device in EXTRA[chapter]:
        if device and not str(data.get("device", "cpu")).startswith(device[0]):
            continue
        value = lookup(data, key)
        assert OPS[op](value, bound), f"{chapter}: {key} = {value!r}, expected {op} {bound!r} ({why})"


def test_training_chapter_measures_every_released_anchor_beside_the_repository():
    """Chapter 3's Table 4 evaluates the release's anchors; where ../shared holds them and their datasets (the
    development and CI machines), none may be left out."""
    if "03_training" not in toc_chapters():
        pytest.skip("03_training is not in _toc.yml")
    data = metrics("03_training")
    shared = ROOT.parent / "shared"
    if not (shared / "official_weights").is_dir() or not os.environ.get("FLAME_DATA_DIR"):
        pytest.skip("no ../shared/official_weights or FLAME_DATA_DIR beside the repository")
    assert data["released_unavailable"] == []
    assert sorted(data["released_anchors"]) == ["amazon-beauty", "amazon-games", "amazon-toys"]
    for d, anchor in data["released_anchors"].items():
        assert 0 < anchor["test"]["NDCG@20"] <= anchor["test"]["HR@20"] <= 100, d


def test_html_built():
    m = manifest()
    assert m["html"]["status"] in ("ok", "skipped"), f"jupyter-book build -W failed: {m['html']}"
    if m["html"]["status"] == "skipped":
        skip_or_fail("the last build ran with --no-html")
    for chapter in m["chapters"]:
        assert (HTML / "book" / f"{chapter}.html").exists(), f"no HTML page for {chapter}"


def plotly_figures(chapter: str) -> int:
    """Number of plotly figures in the executed notebook (outputs carrying plotly's JSON)."""
    nb = json.loads((BUILD / "executed" / f"{chapter}.ipynb").read_text())
    return sum(
        "application/vnd.plotly.v1+json" in o.get("data", {}) for cell in nb["cells"] for o in cell.get("outputs", [])
    )


def chromium() -> str:
    exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        skip_or_fail("no headless Chromium (Debian: apt-get install chromium; .ci/run installs it)")
    return exe


def browse(page: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess:
    """Open a file:// page in headless Chromium with every host name unresolvable (no network)."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--virtual-time-budget=10000",
        "--window-size=1280,2000",
        *mode,
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def pages() -> list[str]:
    return ["intro", *toc_chapters()]


@pytest.mark.parametrize("name", pages())
def test_page_renders_in_chromium(name, tmp_path):
    if name != "intro":
        built(name)
    elif not MANIFEST.exists():
        skip_or_fail(BUILD_HINT)
    page = HTML / "book" / f"{name}.html"
    if not page.exists():
        skip_or_fail(f"no {page.relative_to(ROOT)} (see test_html_built)")
    expected = plotly_figures(name) if name != "intro" else 0

    shot = BUILD / "screenshots" / f"{name}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    proc = browse(page, tmp_path, f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot of {name}: {proc.stderr[-2000:]}"
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50, f"the screenshot of {name} is blank ({shot})"

    html = page.read_text()
    assert len(html) < 2_000_000, f"{name}: {len(html):,} bytes; plotly.js should be served once from _static/"
    dom = browse(page, tmp_path, "--dump-dom").stdout
    assert "bd-main" in dom or "bd-article" in dom, f"{name}: Chromium returned no rendered page"
    formulas = html.count('class="math notranslate')  # Sphinx's math nodes; MathJax typesets each in place
    if formulas:
        assert (HTML / "_static" / "mathjax" / "tex-chtml.js").exists(), "MathJax is not served from _static/"
        typeset = dom.count("<mjx-container")
        assert typeset >= formulas, f"{name}: {typeset} of {formulas} formulas typeset offline"
    rendered = len(re.findall(r'class="[^"]*\bjs-plotly-plot\b', dom))  # added by plotly.js once it has drawn a figure
    assert rendered >= expected, f"{name}: {rendered} of {expected} plotly figures rendered"
    if expected:
        assert "main-svg" in dom, f"{name}: plotly figures without their SVG"
        assert (HTML / "_static" / "plotly.min.js").exists(), "plotly.min.js is not served from _static/"
