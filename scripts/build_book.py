"""Build the FLAME Book: convert, execute, validate and render every chapter listed in _toc.yml.

    python scripts/build_book.py                      # quick profile (CPU, minutes): what CI runs
    python scripts/build_book.py full                 # the paper's settings (book/params/full.yml), for a GPU
    python scripts/build_book.py quick 06_efficiency  # only these chapters (the HTML then holds only them)
    python scripts/build_book.py full -p dataset amazon-beauty   # papermill parameters on top of the profile
    python scripts/build_book.py quick --jobs 2       # two chapters at a time, one CPU thread each (what CI runs)

Steps (README, "The FLAME Book"), for each chapter book/NN_name.py named in _toc.yml, in its order:

1. ``jupytext --to ipynb`` into _build/notebooks/ (never beside the .py: .ipynb files are build artefacts);
2. ``papermill -f book/params/PROFILE.yml --cwd <repository root>`` into _build/executed/, runtime printed;
3. ``pytest --nbval-lax --nbval-current-env --nbval-sanitize-with book/nbval_sanitize.cfg`` on the executed
   notebook: the chapter runs a second time, every cell must succeed, and cells marked NBVAL_CHECK_OUTPUT
   must reproduce their output. Chapters reuse finished experiments from runs_dir, so this run trains little,
   and the timings papermill's run measured (``flamebook.measured``, keyed by the build's FLAMEBOOK_BUILD id).

then the HTML is built FROM THE EXECUTED NOTEBOOKS with execution off, so no chapter runs a third time:
_config.yml (execution off, .ipynb allowed), a _toc.yml of the built chapters, the toc's markdown pages
and the executed notebooks are staged into _build/stage, plotly.js is served once from _static/ instead of
being inlined into every page (4.8 MB each), and ``jupyter-book clean`` + ``jupyter-book build -W
--keep-going`` runs there; the HTML lands in _build/html (open _build/html/index.html).

With ``--jobs N`` (N > 1) N chapters execute at a time, each in its own processes with
OMP_NUM_THREADS = cores / N unless that variable is set: on a small CPU two single-threaded trainings get
more done than one two-threaded one, whose 64-wide matrices scale poorly. Chapters that need the same
experiment or anchor wait for each other (a file lock in flame_core.experiments and flame_core.anchor) and
reuse it, so nothing is trained twice; each chapter's output then goes to _build/logs/.

A failing chapter does not stop the others; the exit status is 1 if any step failed. _build/book.json
records the profile, the chapters, each step's status and runtime; tests/test_book.py reads it, together
with each chapter's _build/outputs/NN_name/metrics.json (chapters write there by default). The experiment
cache _build/runs is kept between builds; everything else a build writes is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
NOTEBOOKS, EXECUTED, STAGE, HTML = BUILD / "notebooks", BUILD / "executed", BUILD / "stage", BUILD / "html"
LOGS = BUILD / "logs"
MANIFEST = BUILD / "book.json"
SANITIZE = ROOT / "book" / "nbval_sanitize.cfg"
PLOTLY_MARKER = "plotly.js v"  # the licence header of the bundle plotly's notebook renderer inlines once per notebook
MATHJAX_CDN = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*"></script>')


def toc_files(node) -> list[str]:
    """Every `file` entry of a _toc.yml tree (root first, then chapters/parts/sections in order)."""
    if isinstance(node, list):
        return [f for item in node for f in toc_files(item)]
    if not isinstance(node, dict):
        return []
    found = [node["root"]] if "root" in node else []
    found += [node["file"]] if "file" in node else []
    for key in ("parts", "chapters", "sections"):
        found += toc_files(node.get(key, []))
    return found


def filter_toc(node, keep):
    """The toc tree without the file entries for which keep(file) is false."""
    if isinstance(node, list):
        return [x for x in (filter_toc(item, keep) for item in node) if x is not None]
    if isinstance(node, dict):
        if "file" in node and not keep(node["file"]):
            return None
        return {k: (filter_toc(v, keep) if k in ("parts", "chapters", "sections") else v) for k, v in node.items()}
    return node


def run(cmd: list[str], log: Path | str | None = None, env: dict | None = None) -> tuple[int, float]:
    """Run a command from the repository root (output streamed, or appended to `log`); returns (status, seconds)."""
    t0 = time.perf_counter()
    if log:
        with open(log, "a") as f:
            status = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    else:
        status = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    return status, time.perf_counter() - t0


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def write_manifest(manifest: dict) -> None:
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


def chapter_params(src: Path, params: Path) -> Path:
    """The profile restricted to the names the chapter's `parameters` cell defines, as _build/params/NAME.yml."""
    cell = re.search(r'^# %% tags=\["parameters"\]\n(.*?)(?=^# %%)', src.read_text(), flags=re.M | re.S)
    names = set(re.findall(r"^(\w+)\s*=", cell.group(1), flags=re.M)) if cell else set()
    profile = yaml.safe_load(params.read_text()) or {}
    own = BUILD / "params" / f"{src.stem}.yml"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text(yaml.safe_dump({k: v for k, v in profile.items() if k in names}, sort_keys=False))
    return own


def show_one_parameters_cell(path: Path) -> None:
    """Hide a chapter's default `parameters` cell when papermill injected the values it ran with after it."""
    nb = json.loads(path.read_text())
    tags = [cell.get("metadata", {}).get("tags", []) for cell in nb["cells"]]
    if any("injected-parameters" in t for t in tags):
        for cell, t in zip(nb["cells"], tags):
            if "parameters" in t and "remove-cell" not in t:
                cell.setdefault("metadata", {})["tags"] = [*t, "remove-cell"]
        path.write_text(json.dumps(nb, indent=1) + "\n")


def execute(
    chapter: str,
    params: Path,
    extra: list[str],
    timeout: int | None,
    manifest: dict,
    env: dict | None = None,
    log: Path | None = None,
) -> bool:
    """Steps 1-3 for one chapter; records statuses and runtimes in the manifest.

    Output is streamed, or appended to `log` (parallel builds), whose tail is printed if a step fails.
    """
    entry = manifest["chapters"][chapter]
    src, nb, done = ROOT / "book" / f"{chapter}.py", NOTEBOOKS / f"{chapter}.ipynb", EXECUTED / f"{chapter}.ipynb"
    shutil.rmtree(BUILD / "outputs" / chapter, ignore_errors=True)  # a failed run must not leave old results
    done.unlink(missing_ok=True)
    if log:
        log.unlink(missing_ok=True)
    steps = {
        "jupytext": [sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", "-o", str(nb), str(src)],
        "papermill": [
            sys.executable,
            "-m",
            "papermill",
            str(nb),
            str(done),
            "-f",
            str(params),
            "--cwd",
            str(ROOT),
            "-k",
            "python3",
            "--no-progress-bar",
            *extra,
            *(["--execution-timeout", str(timeout)] if timeout else []),
        ],
        "nbval": [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--nbval-lax",
            "--nbval-current-env",
            "--nbval-sanitize-with",
            str(SANITIZE),
            str(done),
        ],
    }
    print(
        f"== {chapter}: papermill -f {params.relative_to(ROOT) if params.is_relative_to(ROOT) else params}"
        + (f" (output in {log.relative_to(ROOT)})" if log else ""),
        flush=True,
    )
    for step, cmd in steps.items():
        if step == "papermill":  # only the profile's keys the chapter has: its injected cell lists nothing else
            own = chapter_params(src, params)
            cmd[cmd.index(str(params))] = str(own)
        status, seconds = run(cmd, log, env)
        if step != "jupytext":
            entry[f"{step}_seconds"] = round(seconds, 1)
            print(f"== {chapter}: {step} {'ok' if not status else 'FAILED'} in {seconds:.1f} s", flush=True)
        if status:
            entry["status"] = f"{step} failed"
            if log:
                print(f"== {chapter}: the end of {log.relative_to(ROOT)}:\n{tail(log)}", flush=True)
            return False
    entry["status"] = "ok"
    return True


def strip_plotly_bundle(path: Path) -> int:
    """Serve plotly.js from _static/ instead of the notebook outputs; returns the number of bundles dropped.

    plotly's notebook renderer inlines the 4.8 MB plotly.js bundle into the first figure's cell of every
    notebook, and each figure loads MathJax from a CDN: drop both (the page loads _static/plotly.min.js,
    and the book already configures MathJax), so pages stay small and render offline. Each figure output
    keeps its text/html (the div and the Plotly.newPlot call) and loses plotly's JSON, which myst-nb
    cannot render and would warn about (so the staged build need not suppress mystnb.unknown_mime_type,
    and any other output the book cannot show still fails the -W build).
    """
    nb = json.loads(path.read_text())
    dropped = 0
    for cell in nb["cells"]:
        outputs = cell.get("outputs", [])
        keep = [o for o in outputs if PLOTLY_MARKER not in "".join(o.get("data", {}).get("text/html", ""))[:2000]]
        dropped += len(outputs) - len(keep)
        for o in keep:
            if "application/vnd.plotly.v1+json" in o.get("data", {}) and "text/html" in o["data"]:
                # the HTML draws the figure; myst-nb would warn about plotly's JSON (an unknown mime type)
                del o["data"]["application/vnd.plotly.v1+json"]
                o["data"]["text/html"] = MATHJAX_CDN.sub("", "".join(o["data"]["text/html"]))
        cell["outputs"] = keep
    path.write_text(json.dumps(nb, indent=1) + "\n")
    return dropped


def build_html(toc: dict, chapters: list[str], manifest: dict) -> bool:
    """Step 4: stage the executed notebooks and build the HTML with execution off."""
    shutil.rmtree(STAGE, ignore_errors=True)
    shutil.rmtree(HTML, ignore_errors=True)
    (STAGE / "book").mkdir(parents=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"  # executed by papermill already
    config["exclude_patterns"] = [p for p in config.get("exclude_patterns", []) if not p.endswith(".ipynb")]
    sphinx_config = config.get("sphinx", {}).get("config", {})
    sphinx_config.pop("suppress_warnings", None)  # only for direct builds (see _config.yml)
    (STAGE / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    chapter_files = {f"book/{c}" for c in chapters}
    staged = filter_toc(toc, lambda f: not (ROOT / f"{f}.py").exists() or f in chapter_files)
    (STAGE / "_toc.yml").write_text(yaml.safe_dump(staged, sort_keys=False))
    for f in toc_files(staged):
        if (ROOT / f"{f}.md").exists():
            shutil.copy(ROOT / f"{f}.md", STAGE / f"{f}.md")
    if (ROOT / "book" / "_static").is_dir():
        shutil.copytree(ROOT / "book" / "_static", STAGE / "_static")
    dropped = 0
    for c in chapters:
        shutil.copy(EXECUTED / f"{c}.ipynb", STAGE / "book" / f"{c}.ipynb")
        dropped += strip_plotly_bundle(STAGE / "book" / f"{c}.ipynb")
        show_one_parameters_cell(STAGE / "book" / f"{c}.ipynb")
    if dropped:  # jupyter-book adds every .js file of _static to every page (html_js_files)
        import plotly

        (STAGE / "_static").mkdir(exist_ok=True)
        shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", STAGE / "_static")
    jb = str(Path(sys.executable).parent / "jupyter-book")
    run([jb, "clean", str(STAGE)], log=str(BUILD / "jupyter-book-clean.log"))
    status, seconds = run([jb, "build", str(STAGE), "-W", "--keep-going"])
    manifest["html"] = {
        "status": "ok" if not status else "failed",
        "seconds": round(seconds, 1),
        "plotly_bundles_replaced": dropped,
    }
    if (STAGE / "_build" / "html").is_dir():
        shutil.move(STAGE / "_build" / "html", HTML)
    print(f"== html: jupyter-book build -W {'ok' if not status else 'FAILED'} in {seconds:.1f} s -> {HTML}", flush=True)
    return not status


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", nargs="?", default="quick", help="quick, full, or a path to a parameters .yml")
    p.add_argument("chapters", nargs="*", help="chapter names (e.g. 06_efficiency); default: all in _toc.yml")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="a papermill parameter on top of the profile (repeatable)",
    )
    p.add_argument(
        "--cell-timeout",
        type=int,
        default=None,
        help="papermill per-cell timeout in seconds (default: 1200 for quick, none otherwise)",
    )
    p.add_argument("--no-html", action="store_true", help="execute and validate only")
    p.add_argument("--jobs", type=int, default=1, help="chapters executed at a time (default 1; CI uses 2)")
    args = p.parse_args(argv)

    params = ROOT / "book" / "params" / f"{args.profile}.yml"
    params = params if params.exists() else Path(args.profile).resolve()
    if not params.exists():
        p.error(f"no profile {args.profile!r}: expected book/params/{args.profile}.yml or a .yml file")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = [Path(f).name for f in toc_files(toc) if f.startswith("book/") and (ROOT / f"{f}.py").exists()]
    unknown = [c for c in args.chapters if c not in listed]
    if unknown:
        p.error(f"not a chapter in _toc.yml: {unknown}; chapters: {listed}")
    chapters = args.chapters or listed
    timeout = args.cell_timeout if args.cell_timeout is not None else (1200 if args.profile == "quick" else 0)
    extra = [x for key, value in args.parameter for x in ("-p", key, value)]

    for d in (NOTEBOOKS, EXECUTED):
        d.mkdir(parents=True, exist_ok=True)
    manifest = {
        "profile": args.profile,
        "params": str(params),
        "parameters": dict(args.parameter),
        "jobs": args.jobs,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "chapters": {c: {"status": "pending"} for c in chapters},
        "html": {"status": "skipped" if args.no_html else "pending"},
    }
    write_manifest(manifest)
    t0 = time.perf_counter()
    env, jobs = dict(os.environ), max(1, args.jobs)
    env["FLAMEBOOK_BUILD"] = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"  # nbval reuses papermill's timings
    for var in ("FLAME_DATA_DIR", "FLAME_CACHE_DIR"):  # a chapter runs in two working directories (papermill's
        if env.get(var):  # --cwd, then nbval's notebook folder), so a relative folder would name two places
            env[var] = str(Path(env[var]).expanduser().resolve())
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
        LOGS.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    def one(chapter: str) -> bool:
        done = execute(chapter, params, extra, timeout, manifest, env, LOGS / f"{chapter}.log" if jobs > 1 else None)
        with lock:
            write_manifest(manifest)
        return done

    with ThreadPoolExecutor(max_workers=jobs) as pool:  # in toc order: later chapters reuse earlier runs
        ok = [c for c, done in zip(chapters, pool.map(one, chapters)) if done]
    html_ok = True
    if not args.no_html:
        statuses = manifest["chapters"]
        executed = [
            c for c in chapters if (EXECUTED / f"{c}.ipynb").exists() and statuses[c]["status"] != "papermill failed"
        ]
        html_ok = build_html(toc, executed, manifest)
    manifest["seconds"] = round(time.perf_counter() - t0, 1)
    write_manifest(manifest)

    print(
        "== book:",
        ", ".join(
            f"{c} {v['status']} (papermill {v.get('papermill_seconds', '-')} s, nbval {v.get('nbval_seconds', '-')} s)"
            for c, v in manifest["chapters"].items()
        ),
    )
    print(f"== book: html {manifest['html']['status']}; {manifest['seconds']:.0f} s in all")
    return 0 if len(ok) == len(chapters) and html_ok else 1


if __name__ == "__main__":
    sys.exit(main())
