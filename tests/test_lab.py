"""Paired notebooks in JupyterLab: a real Jupyter server on 127.0.0.1 with the project's settings opens a chapter
as a notebook, a save keeps the outputs in the paired .ipynb and leaves the .py as it was, and Chromium shows
the chapter as notebook cells.

The server serves a copy of book/ (the chapter and book/jupytext.toml) so the test never writes into the
repository; JUPYTER_CONFIG_PATH is the repository's .jupyter (the README's command), and the user's own Lab
settings and workspaces are replaced by empty temporary folders.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "01_motivation.py"
TOKEN = "flame-book-test"


def needs(condition: bool, why: str) -> None:
    """Skip when a prerequisite is missing, except under CI, where it is a failure."""
    if not condition:
        skip_or_fail(f"{why} (CI installs it: see .ci/run)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A running `jupyter lab` (the README's command) over a copy of the chapter; yields (base URL, root)."""
    needs(
        shutil.which("jupyter-lab", path=str(Path(sys.executable).parent)) is not None,
        'JupyterLab is not installed (pip install -e ".[lab]")',
    )
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "project"
    (root / "book").mkdir(parents=True)
    for name in (CHAPTER, "jupytext.toml"):
        shutil.copy(ROOT / "book" / name, root / "book" / name)
    port = free_port()
    env = {**os.environ, "JUPYTER_CONFIG_PATH": str(ROOT / ".jupyter"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime")}
    cmd = [
        str(Path(sys.executable).parent / "jupyter-lab"),
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={tmp / 'user-settings'}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
    ]
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, (tmp / "server.log").read_text()
                time.sleep(0.5)
        else:
            pytest.fail(f"jupyter lab did not start in 60 s:\n{(tmp / 'server.log').read_text()}")
        yield base, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def api(base: str, path: str, body: dict | None = None) -> dict:
    url = f"{base}{path}{'&' if '?' in path else '?'}token={TOKEN}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method="PUT" if body is not None else "GET", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def test_lab_opens_python_files_with_the_jupytext_notebook_by_default(lab):
    base, _ = lab
    plugin = api(base, "/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    assert plugin["schema"]["properties"]["defaultViewers"]["default"]["python"] == "Jupytext Notebook"


def test_a_save_keeps_outputs_in_the_paired_ipynb_and_the_py_unchanged(lab):
    base, root = lab
    source = root / "book" / CHAPTER
    before = source.read_bytes()
    model = api(base, f"/api/contents/book/{CHAPTER}?content=1")
    assert model["type"] == "notebook" and model["format"] == "json"
    notebook = model["content"]
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert len(code) > 5 and code[0]["source"].startswith("import")
    code[0]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "an output that must survive\n"}]
    code[0]["execution_count"] = 1
    notebook["metadata"]["language_info"] = {"name": "python"}  # what a kernel adds; not for the .py
    api(base, f"/api/contents/book/{CHAPTER}", {"type": "notebook", "format": "json", "content": notebook})

    paired = root / "book" / CHAPTER.replace(".py", ".ipynb")
    assert paired.exists()
    saved = [cell for cell in json.loads(paired.read_text())["cells"] if cell["cell_type"] == "code"][0]
    assert "".join(saved["outputs"][0]["text"]) == "an output that must survive\n"  # on disk: a list of lines
    assert source.read_bytes() == before  # the source is untouched: same inputs, same header, no outputs
    reopened = api(base, f"/api/contents/book/{CHAPTER}?content=1")["content"]
    first = [cell for cell in reopened["cells"] if cell["cell_type"] == "code"][0]
    assert first["outputs"][0]["text"] == "an output that must survive\n"  # outputs come back from the .ipynb


def test_chromium_shows_the_chapter_as_notebook_cells(lab, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    needs(chromium is not None, "Chromium is not installed (apt-get install chromium)")
    base, root = lab
    url = f"{base}/lab/tree/book/{CHAPTER}?token={TOKEN}"
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1400,1000",
        "--virtual-time-budget=30000",
    ]
    shot = ROOT / "_build" / "screenshots" / "lab-chapter.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [*flags, f"--user-data-dir={tmp_path / 'a'}", f"--screenshot={shot}", url], capture_output=True, timeout=180
    )
    dom = subprocess.run(
        [*flags, f"--user-data-dir={tmp_path / 'b'}", "--dump-dom", url], capture_output=True, text=True, timeout=180
    ).stdout
    assert shot.exists() and shot.stat().st_size > 10_000
    widgets = lambda name: len(re.findall(rf'class="[^"]*\b{name}\b[^"]*"', dom))  # noqa: E731 - elements of class
    assert widgets("jp-NotebookPanel") >= 1, "the chapter did not open as a notebook"
    assert widgets("jp-Notebook-cell") >= 10, f"{widgets('jp-Notebook-cell')} notebook cells in the DOM"
    assert widgets("jp-FileEditor") == 0, "the chapter opened in the text editor"
