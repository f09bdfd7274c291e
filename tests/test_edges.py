"""Trust at the edges: every damaged or wrong file the command line reads exits 2 with one line naming it and
loses nothing; a damaged checkpoint costs one epoch; the release's datasets are fetched and checked."""

import contextlib
import fcntl
import functools
import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from flame_core import release
from flame_core.cli import main
from flame_core.files import CHECKPOINT, PREVIOUS, FileError, load_checkpoint, save_checkpoint
from flame_core.utils import file_lock

from conftest import same_history

TINY = ["--dataset", "synthetic", "--hidden", "16", "--max-len", "12", "--batch-size", "128", "--no-progress"]
SHARED_DATA = Path(os.environ.get("FLAME_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def error_line(capsys) -> str:
    """The one line a failed command wrote to stderr (asserting it is one line)."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------
# Weights and anchors


def damaged_files(tmp_path: Path) -> dict[str, Path]:
    """A text file, a truncated torch file, an empty one, and a torch file of the wrong kind."""
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")
    whole = tmp_path / "whole.pt"
    torch.save({"item_emb.weight": torch.zeros(5, 4)}, whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    other = tmp_path / "list.pt"
    torch.save([1, 2, 3], other)
    return {"text": text, "truncated": truncated, "empty": empty, "other": other}


@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "other"])
def test_a_frozen_file_that_is_not_an_anchor_exits_2(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    path = damaged_files(tmp_path)[kind]
    runs = tmp_path / "runs"
    assert main(["train", "--method", "flame", "--epochs", "1", "--frozen", str(path), "--runs", str(runs), *TINY]) == 2
    err = error_line(capsys)
    assert err.startswith(f"error: {path}: ") and "expected anchor weights" in err
    assert not list(runs.rglob("*.pt"))  # nothing trained
    assert main(["evaluate", "--dataset", "synthetic", "--weights", str(path), "--max-len", "12"]) == 2
    assert error_line(capsys).startswith(f"error: {path}: ")


def test_an_anchor_of_other_sizes_names_them(tmp_path, capsys):
    anchor = tmp_path / "anchor.pt"
    torch.save({"item_emb.weight": torch.zeros(7, 16), "pos_emb.weight": torch.zeros(12, 16)}, anchor)
    assert main(["evaluate", "--weights", str(anchor), *TINY[:6]]) == 2
    err = error_line(capsys)
    assert f"{anchor}: anchor has 6 items" in err and "need 100 items" in err


# ---------------------------------------------------------------------------------------------------------
# Checkpoints


def interrupted_run(out: Path, monkeypatch, epochs_done: int = 2) -> None:
    """A CLI run of 3 epochs stopped right after its `epochs_done`-th checkpoint (as Ctrl-C would)."""
    import flame_core.engine as engine

    saves = []

    def save_then_stop(folder, obj):
        path = save_checkpoint(folder, obj)
        saves.append(path)
        if len(saves) == epochs_done:
            raise KeyboardInterrupt
        return path

    with monkeypatch.context() as m:
        m.setattr(engine, "save_checkpoint", save_then_stop)
        assert main(["train", "--method", "single", "--epochs", "3", "--out", str(out), *TINY]) == 130


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "flipped":  # one byte inside the stored tensors: torch.load alone would not notice
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(data)
    else:
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "flipped", "missing"])
def test_resume_from_a_damaged_checkpoint_falls_back_one_epoch(tmp_path, capsys, monkeypatch, how):
    assert main(["train", "--method", "single", "--epochs", "3", "--out", str(tmp_path / "whole"), *TINY]) == 0
    out = tmp_path / "cut"
    interrupted_run(out, monkeypatch)
    assert (out / CHECKPOINT).exists() and (out / PREVIOUS).exists()
    damage(out / CHECKPOINT, how)
    capsys.readouterr()
    assert main(["train", "--method", "single", "--epochs", "3", "--out", str(out), "--resume", *TINY]) == 0
    printed = capsys.readouterr().out
    assert f"resuming from the previous checkpoint {out / PREVIOUS} instead (one epoch older)" in printed
    assert "resumed from" in printed and "after epoch 1" in printed
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    resumed = json.loads((out / "results.json").read_text())
    assert same_history(resumed["history"], whole["history"]) and resumed["test"] == pytest.approx(whole["test"])
    assert not (out / PREVIOUS).exists() and load_checkpoint(out, log=print) is not None  # finished: one checkpoint


def test_two_damaged_checkpoints_exit_2_and_keep_every_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cut"
    interrupted_run(out, monkeypatch)
    damage(out / CHECKPOINT, "truncated")
    damage(out / PREVIOUS, "flipped")
    before = files_of(out)
    capsys.readouterr()
    assert main(["train", "--method", "single", "--epochs", "3", "--out", str(out), "--resume", *TINY]) == 2
    err = error_line(capsys)
    assert f"{out / CHECKPOINT}: " in err and f"{out / PREVIOUS}: damaged" in err and "--overwrite" in err
    assert files_of(out) == before  # nothing deleted or rewritten


def test_checkpoints_are_written_atomically_with_the_previous_one_kept(tmp_path):
    save_checkpoint(tmp_path, {"epoch": 1})
    save_checkpoint(tmp_path, {"epoch": 2})
    assert torch.load(tmp_path / CHECKPOINT)["epoch"] == 2 and torch.load(tmp_path / PREVIOUS)["epoch"] == 1
    assert {p.name for p in tmp_path.iterdir()} == {CHECKPOINT, PREVIOUS}  # no temporary file left
    with pytest.raises(FileError, match="no 'method'"):
        load_checkpoint(tmp_path, log=print)


def test_a_process_waiting_for_a_run_another_one_trains_says_so_once(tmp_path):
    lock, lines, entered = tmp_path / ".run.lock", [], threading.Event()

    def wait_for_it():
        with file_lock(lock, log=lines.append):
            entered.set()

    with open(lock, "a") as held:  # another process training that run holds its lock
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = threading.Thread(target=wait_for_it)
        waiting.start()
        deadline = time.monotonic() + 10
        while not lines and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not entered.is_set() and lines == [
            "waiting for .run.lock: another process holds it (it trains the same run or anchor)"
        ]
        fcntl.flock(held, fcntl.LOCK_UN)
    waiting.join(10)
    assert entered.is_set() and len(lines) == 1
    with file_lock(lock, log=lines.append):  # free: no line
        pass
    assert len(lines) == 1


def test_a_run_folder_with_a_damaged_config_or_checkpoint_exits_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--method", "single", "--epochs", "1", "--out", str(out), *TINY]) == 0
    (out / "config.json").write_text('{"model": {"hidden": 16,}\n')
    assert main(["evaluate", "--weights", str(out), *TINY[:2]]) == 2
    assert f"{out / 'config.json'}:1: not valid JSON" in error_line(capsys)
    (out / "config.json").write_text('{"model": {}}\n')
    assert main(["evaluate", "--weights", str(out), *TINY[:2]]) == 2
    assert "no 'train' inside" in error_line(capsys)
    assert main(["evaluate", "--weights", str(tmp_path), *TINY[:2]]) == 2  # a folder that is no run
    assert f"{tmp_path / 'config.json'}: no such file" in error_line(capsys)


def test_a_damaged_record_is_named(tmp_path, capsys):
    (tmp_path / "rec" / "synthetic").mkdir(parents=True)
    bad = tmp_path / "rec" / "synthetic" / "single-seed42-0.json"
    bad.write_bytes(b'{"dataset": "synth\xe9tic"}')
    argv = ["sweep", "--datasets", "synthetic", "--methods", "single", "--record", str(tmp_path / "rec"), "--dry-run"]
    assert main(argv) == 2
    assert f"{bad}: not UTF-8 text" in error_line(capsys)
    bad.write_text('{"dataset": "synthetic"}')
    assert main(argv) == 2
    assert f"{bad}: no 'method'" in error_line(capsys)


# ---------------------------------------------------------------------------------------------------------
# Dataset files


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"1 1 2 3\n2 4 99999999999999999999 6\n", ":2: id 99999999999999999999 is too large"),
        (b"1 1 2 3\n2 4 5 6\n3 caf\xe9 7 8\n", ":3: not UTF-8 text (byte 0xe9 at column 6)"),
        (b"\x89PNG\r\n\x1a\n", ":1: not UTF-8 text"),
    ],
)
def test_a_dataset_file_with_bad_bytes_or_ids_exits_2(tmp_path, capsys, content, fragment):
    path = tmp_path / "data.txt"
    path.write_bytes(content)
    assert main(["train", "--dataset", str(path), "--epochs", "1"]) == 2
    assert f"{path}{fragment}" in error_line(capsys)


# ---------------------------------------------------------------------------------------------------------
# Fetching the release's datasets from a local HTTP server


@contextlib.contextmanager
def serving(folder: Path):
    """An HTTP server on 127.0.0.1 serving `folder`; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A copy of the release's datasets/ folder (from the shared data), as the repository serves it."""
    if not (SHARED_DATA / "amazon-toys.txt").is_file():
        pytest.skip("the shared datasets are not available (FLAME_DATA_DIR=../shared/data)")
    (tmp_path / "mirror" / "datasets").mkdir(parents=True)
    for name in ("amazon-toys", "amazon-beauty"):
        shutil.copy(SHARED_DATA / f"{name}.txt", tmp_path / "mirror" / "datasets")
    return tmp_path / "mirror"


def test_fetch_checks_and_stores_a_dataset_that_train_then_finds(tmp_path, capsys, monkeypatch, mirror):
    data_dir = tmp_path / "data"
    monkeypatch.setenv("FLAME_DATA_DIR", str(data_dir))
    with serving(mirror) as url:
        assert main(["datasets", "fetch", "amazon-toys", "--url", url]) == 0
        assert "SHA-256 checked, stored as" in capsys.readouterr().out
        assert main(["datasets", "fetch", "amazon-toys", "--url", url]) == 0  # a second fetch keeps the file
        assert "already in" in capsys.readouterr().out
    assert (data_dir / "amazon-toys.txt").read_bytes() == (SHARED_DATA / "amazon-toys.txt").read_bytes()
    assert sorted(p.name for p in data_dir.iterdir()) == ["amazon-toys.txt"]
    assert main(["datasets"]) == 0
    listed = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[2:]}
    assert listed["amazon-toys"] == "available" and listed["amazon-beauty"] == "fetchable"
    assert release.state("amazon-toys") == "available"


def test_a_corrupted_download_keeps_nothing(tmp_path, capsys, monkeypatch, mirror):
    served = mirror / "datasets" / "amazon-beauty.txt"
    served.write_bytes(served.read_bytes().replace(b"1 2", b"1 3", 1))
    data_dir = tmp_path / "data"
    monkeypatch.setenv("FLAME_DATA_DIR", str(data_dir))
    with serving(mirror) as url:
        assert main(["datasets", "fetch", "all", "--url", url]) == 2  # amazon-beauty comes first
    err = error_line(capsys)
    assert "amazon-beauty.txt: the download (" in err and "does not match the release's SHA-256" in err
    assert "nothing kept" in err and list(data_dir.iterdir()) == []


def test_an_unreachable_host_or_a_missing_file_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLAME_DATA_DIR", str(tmp_path / "data"))
    with serving(tmp_path) as url:  # serves an empty folder: 404
        assert main(["datasets", "fetch", "yelp", "--url", url]) == 2
    assert "datasets/yelp.txt: HTTP 404" in error_line(capsys)
    with socket_closed() as url:
        assert main(["datasets", "fetch", "yelp", "--url", url]) == 2
    err = error_line(capsys)
    assert "cannot download" in err and "Connection refused" in err and release.RELEASED["yelp"].sha256 in err
    assert list((tmp_path / "data").iterdir()) == []


@contextlib.contextmanager
def socket_closed():
    """A base URL on 127.0.0.1 whose port nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}/"


def test_fetch_never_overwrites_a_file_of_another_content(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLAME_DATA_DIR", str(tmp_path))
    mine = tmp_path / "yelp.txt"
    mine.write_text("1 1 2 3\n")
    assert main(["datasets", "fetch", "yelp", "--url", "http://127.0.0.1:9/"]) == 2
    assert "exists but is not the release's file" in error_line(capsys)
    assert mine.read_text() == "1 1 2 3\n"
    assert main(["datasets"]) == 0
    assert any(line.split()[:2] == ["yelp", "differs"] for line in capsys.readouterr().out.splitlines())


def test_datasets_says_where_it_looks(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLAME_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"data folder: {tmp_path / 'nowhere'} (FLAME_DATA_DIR)"
    assert "FLAME_DATA_DIR names a folder that does not exist" in out[1]
    monkeypatch.delenv("FLAME_DATA_DIR")
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert f"data folder: {tmp_path / 'cache' / 'data'} (default: FLAME_DATA_DIR is not set)" in out
    for name in ("ml-100k", "synthetic", *release.RELEASED):
        assert f"\n{name} " in out
    assert main(["train", "--dataset", "amazon-toys"]) == 2
    assert "Fetch it: python -m flame_core datasets fetch amazon-toys" in error_line(capsys)


# ---------------------------------------------------------------------------------------------------------
# Help


def test_train_help_shows_methods_and_defaults_as_typed(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--method {single,ensemble_scratch,ensemble_guide,flame,emkd,canet,ckd}" in text
    assert "(default: ml-100k)" in text and "(default: flame)" in text
    assert "--canet-sizes INT,INT,... canet routing space" in text and "(default: 32,48,64)" in text
    assert "(default: none)" in text and "(default: true)" in text and "(default: unset)" in text
    assert "--pair-weighting {similarity,uniform}" in text
    for python_value in ("None", "True", "False", "(32, 48, 64)"):
        assert python_value not in text, python_value
