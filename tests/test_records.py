"""The committed records and benchmark results: provenance without machine paths, readable fields, and the
compact per-user ranks that paired tests between methods read."""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from flame_core import utils
from flame_core.metrics import RANK_CAP, decode_ranks, encode_ranks, metrics_from_ranks
from flame_core.utils import git_revision, machine_fingerprint, portable_command

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "results").glob("*/*.json")) + sorted((ROOT / "bench" / "results").glob("*.json"))
ABSOLUTE = re.compile(r"(?:^|[\s='\"])/[A-Za-z_.]")  # a path from the root, as a value or inside a command


def strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_files_hold_no_absolute_path(path):
    found = [s for s in strings(json.loads(path.read_text())) if ABSOLUTE.search(s)]
    assert not found, f"{path.relative_to(ROOT)} holds absolute paths: {found[:3]}"


@pytest.mark.parametrize("path", sorted((ROOT / "results").glob("*/*.json")), ids=lambda p: p.name)
def test_records_name_their_pretrained_networks_and_decode_their_ranks(path):
    rec = json.loads(path.read_text())
    for p in rec["pretrained"]:
        assert p["origin"] in ("pretrained", "file") and p["file"].endswith(".pt") and "/" not in p["file"]
    if rec.get("test_ranks"):  # records made before ranks were stored have none
        ranks = torch.from_numpy(decode_ranks(rec["test_ranks"]))
        assert len(ranks) == rec["dataset_stats"]["users"]
        assert metrics_from_ranks(ranks)["NDCG@20"] == pytest.approx(rec["test"]["NDCG@20"], abs=1e-9)


def anchors_named_with_other_weights(records: dict[str, dict]) -> list[str]:
    """Pairs of records (by name) that name the same cached anchor (dataset and cache key) with different weight
    digests; records written before the digest have none and are not compared."""
    seen, clashes = {}, []
    for name, rec in records.items():
        for p in rec["pretrained"]:
            if p["origin"] == "pretrained" and "weights" in p:
                first = seen.setdefault((rec["dataset"], p["key"]), (p["weights"], name))
                clashes += [f"{name} and {first[1]} ({p['key']})"] if first[0] != p["weights"] else []
    return clashes


def test_records_that_name_one_anchor_hold_the_same_weights():
    """Runs whose records name one cached anchor were trained beside the same frozen weights: an anchor trained
    again after its cache was lost, into other weights, shows here instead of passing for the same one."""
    records = {p.name: json.loads(p.read_text()) for p in sorted((ROOT / "results").glob("*/*.json"))}
    assert not anchors_named_with_other_weights(records)

    def made(*weights):  # records r0, r1, ... naming anchor k1 of dataset d with these digests
        return {
            f"r{i}": {"dataset": "d", "pretrained": [{"origin": "pretrained", "key": "k1", "weights": w}]}
            for i, w in enumerate(weights)
        }

    assert anchors_named_with_other_weights(made("aa", "aa")) == []
    assert anchors_named_with_other_weights(made("aa", "aa", "bb")) == ["r2 and r0 (k1)"]


def test_weights_digest_reads_the_values_not_the_storage():
    state = {"w": torch.randn(3, 4), "scale": torch.tensor(2.0), "none": torch.zeros(0), "h": torch.ones(2).half()}
    assert utils.weights_digest(state) == utils.weights_digest({k: v.clone() for k, v in state.items()})
    assert utils.weights_digest(state) == utils.weights_digest({**state, "w": state["w"].t().contiguous().t()})
    moved = {**state, "w": state["w"].clone()}
    moved["w"][1, 2] += 1e-6
    assert utils.weights_digest(moved) != utils.weights_digest(state)
    assert utils.weights_digest({**state, "w": state["w"].reshape(4, 3)}) != utils.weights_digest(state)


def test_ranks_round_trip_capped_at_one_byte():
    ranks = np.array([0, 1, 19, 20, 254, 255, 256, 11923])
    blob = encode_ranks(ranks)
    assert blob["users"] == 8 and json.loads(json.dumps(blob)) == blob
    assert decode_ranks(blob).tolist() == [0, 1, 19, 20, 254, 255, RANK_CAP, RANK_CAP]
    many = np.full(20000, 300)
    many[::50] = 3
    assert len(encode_ranks(many)["data"]) < 2000  # 20,000 users in a few hundred bytes when misses dominate


def test_commands_are_recorded_with_relative_paths(tmp_path):
    argv = ["python", "-m", "flame_core", "train", "--out", str(tmp_path / "run"), f"--record={tmp_path}/rec", "-x"]
    command = portable_command(argv, cwd=tmp_path)
    assert command == "python -m flame_core train --out run --record=rec -x"
    assert not ABSOLUTE.search(portable_command(["--frozen", "/opt/w.pt"], cwd="/work/main"))


def test_the_revision_is_dirty_only_when_the_code_it_names_changed(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True).stdout

    (tmp_path / "pkg").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "results" / "r.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head, pkg = git("rev-parse", "--short=12", "HEAD").strip(), tmp_path / "pkg"
    (tmp_path / "results" / "r.json").write_text('{"new": 1}\n')  # a record written beside the code
    assert git_revision(pkg) == head
    (pkg / "b.py").write_text("y = 2\n")  # a new module the package could import
    assert git_revision(pkg) == head + "+dirty"
    (pkg / "b.py").unlink()
    (pkg / "a.py").write_text("x = 2\n")
    assert git_revision(pkg).endswith("+dirty")


def test_the_package_revision_is_read_once_so_a_long_run_names_the_code_it_imported(monkeypatch):
    answers = iter(["aaa111", "bbb222+dirty"])  # a commit lands while the process trains
    monkeypatch.setattr(utils, "_revision", lambda cwd: next(answers))
    utils._package_revision.cache_clear()
    try:
        assert [git_revision(), git_revision()] == ["aaa111", "aaa111"]
        assert git_revision(Path.cwd()) == "bbb222+dirty"  # a folder asked for by name is read afresh
    finally:
        utils._package_revision.cache_clear()


def test_the_machine_that_timed_a_run_is_named_without_identifying_it():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = machine_fingerprint(torch.device("cpu"))
        torch.set_num_threads(2)
        two = machine_fingerprint(torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    assert (one["threads"], two["threads"]) == (1, 2) and one != two  # a thread count apart: seconds do not compare
    assert one["name"] and one["cores"] >= 1 and set(one) == {"name", "cores", "threads"}
    assert not ABSOLUTE.search(one["name"])


@pytest.mark.parametrize("path", sorted((ROOT / "results").glob("*/*.json")), ids=lambda p: p.name)
def test_records_settings_read_back_into_todays_configuration(path):
    from flame_core.config import ModelConfig, TrainConfig

    rec = json.loads(path.read_text())
    cfg = TrainConfig.from_dict(rec["train"], legacy=True)  # records written before the rename of split, too
    assert cfg.method == rec["method"] and cfg.seed == rec["seed"] and cfg.epochs == rec["epoch_budget"]
    assert ModelConfig.from_dict(rec["model"]).max_len == rec["model"]["max_len"]
    if "split" in rec["train"]:
        assert cfg.flame.module_split == rec["train"]["split"]


@pytest.fixture(scope="module")
def full_records() -> list[dict]:
    """The committed full-profile records, read once for the README tests."""
    from flame_core.experiments import load_records

    return [r for r in load_records(ROOT / "results") if r["profile"] == "full"]


FIGURE = re.compile(r"\d+\.\d\d ± \d+\.\d\d|(?<=\*\*)\d+\.\d\d(?=\*\*)")  # '7.07 ± 0.03', or one seed's **7.05**


def full_profile_rows(readme: str):
    """README's "Measured figures" rows of full-profile sweeps: (the datasets of their command, result cell)."""
    for line in readme.splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and len(cells) == 4 and "--profile full" in cells[1]:
            datasets = re.search(r"--datasets ([\w,-]+)", cells[1])
            yield datasets.group(1).split(","), cells[3]


def test_readme_quotes_the_full_profile_records_as_they_stand(full_records):
    """Every mean ± sd (or one seed's bold figure) of README's full-profile rows is one the records give for a
    table row of that dataset, test NDCG@20 or HR@20: a seed that lands without its row updated fails here."""
    import flamebook

    rows = list(full_profile_rows((ROOT / "README.md").read_text()))
    assert len(rows) >= 10
    for datasets, result in rows:
        recorded = set()
        for dataset in datasets:
            for name in {flamebook.variant(r) for r in full_records if r["dataset"] == dataset}:
                m = flamebook.metrics_over_seeds(flamebook.records_of(full_records, dataset, name))
                recorded |= {flamebook.plus_minus(m[k], m[f"{k} sd"]) for k in ("NDCG@20", "HR@20")}
        stale = [f for f in FIGURE.findall(result) if f not in recorded]
        assert not stale, f"README's row for {datasets} quotes {stale}, which no full record of theirs gives"


# '+0.04 points [−0.05, +0.12], Wilcoxon p 0.65', with the clause before it (from the last ';' or sentence end)
COMPARISON = re.compile(
    r"([^;]*?)([+−-]\d+\.\d\d) points \[([+−-]\d+\.\d\d), ([+−-]\d+\.\d\d)\],? (?:but )?(?:Wilcoxon )?p ([\d.e-]*\d)"
)


def same_p(quoted: str, p: float) -> bool:
    """`p` rounds to `quoted` at the significant digits `quoted` shows ('0.040' has two, '2e-43' one)."""
    digits = len(quoted.split("e")[0].replace(".", "").lstrip("0"))
    return float(f"{p:.{digits}g}") == float(quoted)


def test_readme_quotes_the_per_user_comparisons_with_single_as_they_stand(full_records):
    """Every per-user difference with Single that README's full-profile rows quote (mean difference in points,
    its 95% CI and the Wilcoxon p) is the one chapter 3's main table computes for a method of that dataset;
    clauses comparing with an anchor or Ensemble-Guide are chapter 3's other tables and are not read here."""
    import flamebook

    checked = 0
    for datasets, result in full_profile_rows((ROOT / "README.md").read_text()):
        names = sorted({flamebook.variant(r) for r in full_records if r["dataset"] in datasets})
        numbers = flamebook.main_numbers(full_records, datasets, names)
        computed = [
            (flamebook.delta_text(row), row["p"])
            for _, row in numbers.iterrows()
            if row["comparison"] == flamebook.PER_USER
        ]
        for clause, *delta, quoted_p in COMPARISON.findall(result.replace("**", "")):
            sentence = clause.split(". ")[-1]
            if "anchor" in sentence or "Ensemble-Guide" in sentence:
                continue
            text = "{} [{}, {}]".format(*delta).replace("−", "-")
            assert any(t == text and same_p(quoted_p, p) for t, p in computed), (
                f"README's row for {datasets} quotes {text}, p {quoted_p} against Single; the records give {computed}"
            )
            checked += 1
    assert checked >= 12
