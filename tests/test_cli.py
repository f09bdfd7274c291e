"""The command line and the configuration's checks."""

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import torch

from flame_core.cli import main
from flame_core.config import ConfigError, ModelConfig, TrainConfig
from flame_core.data import available_datasets
from flame_core.utils import machine_fingerprint, weights_digest

TINY = ["--dataset", "synthetic", "--hidden", "16", "--max-len", "12", "--batch-size", "128", "--no-progress"]


def test_config_rejects_unknown_keys_wrong_types_and_bad_values():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\]"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match=r"TrainConfig.epochs: expected <class 'int'>, got '3'"):
        TrainConfig.from_dict({"epochs": "3"})
    with pytest.raises(ConfigError, match="split"):
        TrainConfig(module_split="emb|blocks")
    with pytest.raises(ConfigError, match="shared"):
        TrainConfig(module_split="net", path_attention="shared")
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(hidden=10, heads=3)
    assert TrainConfig.from_dict({"num_paths": None, "lr": 1}).lr == 1


def test_train_prints_the_results_table_and_writes_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    argv = ["train", "--method", "flame", "--epochs", "1", "--out", str(out), "--record", str(tmp_path / "rec"), *TINY]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    (rec_path,) = (tmp_path / "rec" / "synthetic").glob("flame-seed42-*.json")
    rec = json.loads(rec_path.read_text())
    assert rec["test"] == json.loads((out / "results.json").read_text())["test"]
    assert [s["git"] for s in rec["sessions"]] == [rec["git"]] and rec["sessions"][0]["machine"] == rec["machine"]
    assert rec["epoch_budget"] == 1 and rec["dataset_stats"]["users"] == 200 and rec["git"] and rec["date"]
    assert rec["pretrained"][0]["file"].endswith(".pt") and "--record" in rec["command"]
    assert rec["pretrained"][0]["origin"] == "pretrained" and rec["pretrained"][0]["seed"] == 0
    assert rec["pretrained"][0]["train_seconds"] > 0 and rec["pretrained"][0]["epochs_run"] == 1  # the anchor's cost
    assert rec["pretrained"][0]["train_cpu_seconds"] > 0 and rec["train_cpu_seconds"] > 0  # CPU seconds too
    assert rec["machine"] == machine_fingerprint(torch.device("cpu"))  # what timed it: hardware, cores, threads
    assert rec["pretrained"][0]["machine"] == rec["machine"]  # and what timed its anchor
    (cached,) = (tmp_path / "cache" / "anchors").glob("synthetic-*.pt")
    assert rec["pretrained"][0]["file"] == cached.name  # the cache entry, and the weights it holds
    assert rec["pretrained"][0]["weights"] == weights_digest(torch.load(cached, weights_only=True)["state"])
    assert "dataset=synthetic users=200" in printed and "training samples=" in printed
    assert "anchor: pretraining" in printed and "flame test" in printed and "NDCG@20" in printed
    assert json.loads((out / "results.json").read_text())["epochs_run"] == 1
    assert main(["evaluate", "--dataset", "synthetic", "--weights", str(out)]) == 0  # the run's selected weights
    test_row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("flame (epoch 1) test")][0]
    assert test_row.split()[-1] == f"{json.loads((out / 'results.json').read_text())['test']['NDCG@20']:.2f}"
    assert main(["train", "--method", "flame", "--epochs", "1", "--out", str(out), *TINY]) == 2  # would overwrite
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--method", "flame", "--epochs", "1", "--out", str(tmp_path / "b"), *TINY]) == 0
    assert "anchor: using cached" in capsys.readouterr().out  # the anchor is reused


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "no-such-data"], "unknown dataset 'no-such-data'"),
        (["train", "--dataset", "synthetic", "--module-split", "emb|x"], "module_split"),
        (["train", "--dataset", "synthetic", "--device", "cuda:7"], "CUDA is not available"),
        (["evaluate", "--dataset", "synthetic", "--weights", "missing.pt"], "missing.pt"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_malformed_file_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 1 2 3\n2 5 six 7\n")
    assert main(["train", "--dataset", str(bad)]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err


def test_datasets_lists_the_embedded_default(capsys):
    assert main(["datasets"]) == 0
    assert "\nml-100k " in capsys.readouterr().out


README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start() -> tuple[list[str], list[str]]:
    """Command 1's train arguments and the sample output README shows for it."""
    text = README.read_text()
    section = text[text.index("## Quick start") : text.index("## The command line")]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S)
    command = next(body for lang, body in blocks if lang == "bash" and "flame_core train" in body)
    sample = next(body for lang, body in blocks if lang == "")
    train = command[command.index("python -m flame_core train") :].splitlines()[0]
    return shlex.split(train)[3:], sample.strip("\n").splitlines()


def shape(line: str) -> str:
    """A printed line with its numbers and run keys masked and its spacing collapsed."""
    line = re.sub(r"(?<=-)[0-9a-f]{12,16}(?=[./])", "KEY", line)
    return " ".join(re.sub(r"\d[\d,]*(\.\d+)?", "N", line).split())


def test_readme_sample_output_is_what_command_1_prints(tmp_path, capsys, monkeypatch):
    argv, sample = quick_start()
    assert argv[:3] == ["train", "--method", "flame"] and "ml-100k" in argv and len(sample) >= 6
    if available_datasets()[0]["state"] != "available" and not os.environ.get("CI"):
        pytest.skip("ml-100k needs recbole (pip install --no-deps recbole==1.2.1)")
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # runs/ relative, as in the README
    argv[argv.index("--epochs") + 1] = "2"  # the same command on a budget a test affords
    assert main([*argv, "--max-len", "12", "--hidden", "16", "--no-progress"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [shape(line) for line in printed[-len(sample) :]] == [shape(line) for line in sample]
