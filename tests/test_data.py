"""Tests of flame_core.data: the parser's errors, the split's exact tensors, the generators and loaders."""

import os
from collections import Counter
from pathlib import Path

import pytest
import torch

import flame_core.data as data_module
from flame_core.data import (
    DatasetError,
    Interactions,
    available_datasets,
    build_split,
    load_dataset,
    load_movielens_100k,
    read_sequences,
    synthetic,
)
from flame_core.release import RELEASED


def write(tmp_path: Path, text: str, name: str = "toy.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tensor(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------------------
# Parser


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("1 1 2 3\n2 4 x 6\n", 2, "expected integer ids, got 'x'"),
        ("1 1 2 3\n2 4 5.0 6\n", 2, "got '5.0'"),
        ("1 1 2 3\n2 4 1_0 6\n", 2, "got '1_0'"),
        ("1 1 2 3\n2 4 0 6\n", 2, "positive item"),
        ("1 1 2 3\n2 4 -5 6\n", 2, "got -5"),
        ("1 1 2 3\n0 4 5 6\n", 2, "positive user"),
        ("1 1 2 3\n2 4 5 6\n1 7 8 9\n", 3, "duplicate user 1 (first seen on line 1)"),
        ("1 1 2 3\n2\n", 2, "user 2 has no items"),
        ("1 1 2 3\n\n\n2 4 x 6\n", 4, "got 'x'"),  # blank lines still count
        ("1 1 2 3\n2 4 9223372036854775808 6\n", 2, "id 9223372036854775808 is too large"),  # beyond int64
        ("1 1 2 3\n2 4 5000000 6\n3 7 8 9\n", 2, "far above the 9 distinct item ids"),  # a 5M-row table
    ],
)
def test_parser_errors_name_file_and_line(tmp_path, text, line, fragment):
    path = write(tmp_path, text)
    with pytest.raises(DatasetError) as info:
        read_sequences(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert "toy.txt" in message and f":{line}:" in message
    assert fragment in message


def test_parser_names_the_line_of_a_byte_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"1 1 2 3\n2 4 5 6\n3 7 \xe9 8\n")
    with pytest.raises(DatasetError, match=rf"^{path}:3: not UTF-8 text \(byte 0xe9 at column 5\)"):
        read_sequences(path)
    with pytest.raises(DatasetError, match="a folder, not a dataset file"):
        read_sequences(tmp_path)


def test_parser_drops_short_users_and_ignores_blank_lines(tmp_path):
    path = write(tmp_path, "\n3 5 6 7 8\n  \n1 9\n2 1 2\n\n4 2 3 4\n")
    data = read_sequences(path)
    assert data.sequences == [[5, 6, 7, 8], [2, 3, 4]]
    assert data.num_dropped == 2
    assert data.num_items == 9  # the file's id space, dropped users included
    assert data.name == "toy" and data.source == str(path)
    assert data.stats() == {
        "dataset": "toy",
        "users": 2,
        "items": 9,
        "interactions": 7,
        "mean_length": 3.5,
        "dropped_users": 2,
    }


def test_parser_rejects_a_file_without_usable_users(tmp_path):
    with pytest.raises(DatasetError, match=r"toy\.txt:2: no user with at least 3 items"):
        read_sequences(write(tmp_path, "1 1 2\n2 3\n"))


def test_fingerprint_tracks_content():
    a = Interactions("a", [[1, 2, 3]], 3, 0, "x")
    assert len(a.fingerprint()) == 16
    assert a.fingerprint() == Interactions("b", [[1, 2, 3]], 3, 5, "y").fingerprint()
    assert a.fingerprint() != Interactions("a", [[1, 2], [3]], 3, 0, "x").fingerprint()
    assert a.fingerprint() != Interactions("a", [[1, 2, 3]], 4, 0, "x").fingerprint()


# ---------------------------------------------------------------------------------------------------------
# Split

TINY = Interactions("tiny", [[1, 2, 3, 4, 5, 6], [7, 8, 9]], 9, 0, "hand-written")


def test_split_default_keep():
    split = build_split(TINY, max_len=3)  # keep = 6: nothing truncated
    assert torch.equal(split.train_inputs, tensor([[0, 0, 1], [0, 1, 2], [1, 2, 3]]))
    assert torch.equal(split.train_targets, tensor([2, 3, 4]))
    # W = max(max_len, longest test input) = 5
    assert torch.equal(split.valid_history, tensor([[0, 1, 2, 3, 4], [0, 0, 0, 0, 7]]))
    assert torch.equal(split.valid_targets, tensor([5, 8]))
    assert torch.equal(split.test_history, tensor([[1, 2, 3, 4, 5], [0, 0, 0, 7, 8]]))
    assert torch.equal(split.test_targets, tensor([6, 9]))
    inputs, targets, history = split.inputs("valid")
    assert torch.equal(inputs, tensor([[2, 3, 4], [0, 0, 7]]))
    assert torch.equal(targets, tensor([5, 8])) and history is split.valid_history
    inputs, targets, _ = split.inputs("test")
    assert torch.equal(inputs, tensor([[3, 4, 5], [0, 7, 8]]))
    assert split.train_inputs.dtype == torch.int64 and split.num_items == 9 and split.max_len == 3


def test_split_keep_truncates_before_splitting():
    split = build_split(TINY, max_len=3, keep=4)  # windows [3, 4, 5, 6] and [7, 8, 9]
    assert torch.equal(split.train_inputs, tensor([[0, 0, 3]]))
    assert torch.equal(split.train_targets, tensor([4]))
    assert torch.equal(split.valid_history, tensor([[0, 3, 4], [0, 0, 7]]))
    assert torch.equal(split.test_history, tensor([[3, 4, 5], [0, 7, 8]]))
    assert torch.equal(split.valid_targets, tensor([5, 8]))
    assert torch.equal(split.test_targets, tensor([6, 9]))


def test_split_keep_none_and_short_max_len():
    split = build_split(TINY, max_len=2, keep=None)
    assert torch.equal(split.train_inputs, tensor([[0, 1], [1, 2], [2, 3]]))
    assert torch.equal(split.train_targets, tensor([2, 3, 4]))
    assert torch.equal(split.test_history, tensor([[1, 2, 3, 4, 5], [0, 0, 0, 7, 8]]))
    assert torch.equal(split.inputs("test")[0], tensor([[4, 5], [7, 8]]))
    # the default keep (max_len + 3 = 5) drops item 1 of the first user
    default = build_split(TINY, max_len=2)
    assert torch.equal(default.train_inputs, tensor([[0, 2], [2, 3]]))
    assert torch.equal(default.test_history, tensor([[2, 3, 4, 5], [0, 0, 7, 8]]))


def test_split_sample_count_order_and_errors():
    data = synthetic(num_users=30, seed=3)
    split = build_split(data, max_len=10, keep=None)
    assert split.train_targets.numel() == sum(len(s) - 3 for s in data.sequences)
    first = data.sequences[0]
    assert split.train_targets[: len(first) - 3].tolist() == first[1:-2]
    assert split.valid_targets.tolist() == [s[-2] for s in data.sequences]
    assert split.to("cpu").test_targets.device.type == "cpu"
    with pytest.raises(ValueError, match="keep"):
        build_split(data, keep=2)
    with pytest.raises(ValueError, match="split"):
        split.inputs("train")


# ---------------------------------------------------------------------------------------------------------
# Synthetic data


def test_synthetic_is_seeded_and_in_range():
    a, b, c = synthetic(seed=0), synthetic(seed=0), synthetic(seed=1)
    assert a.sequences == b.sequences and a.sequences != c.sequences
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert len(a.sequences) == 200 and a.num_items == 100 and a.num_dropped == 0
    assert all(5 <= len(s) <= 30 for s in a.sequences)
    assert all(1 <= i <= 100 for s in a.sequences for i in s)
    # structure: most steps move to the next item of the same 25-item cluster
    steps = [(p, n) for s in a.sequences for p, n in zip(s, s[1:])]
    chained = sum((p - 1) // 25 == (n - 1) // 25 and (n - 1) % 25 == p % 25 for p, n in steps)
    assert 0.6 < chained / len(steps) < 0.85


# ---------------------------------------------------------------------------------------------------------
# MovieLens-100K


def raw_movielens(path: str) -> list[tuple[str, str, float]]:
    """(user, item, timestamp) rows of the raw file, 5-core filtered by a plain independent loop."""
    rows = []
    for line in Path(path).read_text().splitlines()[1:]:
        user, item, _, timestamp = line.split("\t")
        rows.append((user, item, float(timestamp)))
    while True:
        users, items = Counter(r[0] for r in rows), Counter(r[1] for r in rows)
        kept = [r for r in rows if users[r[0]] >= 5 and items[r[1]] >= 5]
        if len(kept) == len(rows):
            return rows
        rows = kept


def test_movielens_100k():
    source = available_datasets()[0]
    if source["state"] != "available":
        pytest.skip("recbole's ml-100k.inter is not installed (pip install --no-deps recbole==1.2.1)")
    data = load_movielens_100k()
    rows = raw_movielens(source["source"])
    assert data.name == "ml-100k" and data.num_dropped == 0
    assert {k: data.stats()[k] for k in data_module.ML_100K} == data_module.ML_100K  # what `datasets` lists
    assert len(data.sequences) == len({r[0] for r in rows}) and data.num_items == len({r[1] for r in rows})
    assert sum(map(len, data.sequences)) == len(rows)
    counts = Counter(i for s in data.sequences for i in s)
    assert sorted(counts) == list(range(1, data.num_items + 1))  # dense ids
    assert min(counts.values()) >= 5 and min(map(len, data.sequences)) >= 5  # 5-core
    # users "1" and "2" come first (users ordered by original id); items sorted by (timestamp, file order)
    mapping: dict[str, int] = {}
    for user, sequence in zip(["1", "2"], data.sequences):
        events = [(t, item) for u, item, t in rows if u == user]
        chronological = [item for _, item in sorted(events, key=lambda e: e[0])]
        assert [mapping.setdefault(item, new) for item, new in zip(chronological, sequence)] == sequence
        assert len(chronological) == len(sequence)
    assert len(set(mapping.values())) == len(mapping)  # one id per raw item
    assert data.sequences[0][:3] == [1, 2, 3]  # items numbered by first appearance


# ---------------------------------------------------------------------------------------------------------
# Lookup and the shared data


def test_movielens_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(data_module, "_movielens_path", lambda: None)
    with pytest.raises(DatasetError, match=r"pip install --no-deps recbole==1\.2\.1"):
        load_dataset("ml-100k")
    assert available_datasets()[0]["state"] == "not installed"


def test_load_dataset_by_name_path_and_unknown(tmp_path, monkeypatch):
    write(tmp_path, "1 1 2 3\n", name="mini.txt")
    monkeypatch.setenv("FLAME_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FLAME_CACHE_DIR", str(tmp_path / "cache"))
    assert load_dataset("mini").sequences == [[1, 2, 3]]
    assert load_dataset(str(tmp_path / "mini.txt")).name == "mini"
    assert load_dataset("synthetic").stats() == {
        "dataset": "synthetic",
        **data_module.SYNTHETIC,
        "mean_length": 18.33,
        "dropped_users": 0,
    }
    listed = {d["name"]: d["state"] for d in available_datasets()}
    assert list(listed) == ["ml-100k", "synthetic", *RELEASED, "mini"]
    assert listed["synthetic"] == listed["mini"] == "available" and listed["amazon-toys"] == "fetchable"
    with pytest.raises(DatasetError) as info:
        load_dataset("no-such-data")
    message = str(info.value)
    assert "'no-such-data'" in message and "mini" in message and "synthetic" in message
    assert "FLAME_DATA_DIR" in message
    monkeypatch.delenv("FLAME_DATA_DIR")
    with pytest.raises(DatasetError, match="FLAME_DATA_DIR is not set"):
        load_dataset("mini")


def test_amazon_toys_counts(capsys):
    folder = os.environ.get("FLAME_DATA_DIR")
    if not folder:
        pytest.skip("FLAME_DATA_DIR is not set (e.g. FLAME_DATA_DIR=../shared/data)")
    data = load_dataset("amazon-toys")
    split = build_split(data, max_len=50)
    assert data.stats() == {
        "dataset": "amazon-toys",
        "users": 19412,
        "items": 11924,
        "interactions": 167597,
        "mean_length": 8.63,
        "dropped_users": 0,
    }
    assert split.train_inputs.shape == (106592, 50) and split.train_targets.shape == (106592,)
    assert split.valid_history.shape[0] == split.test_targets.shape[0] == 19412
    assert capsys.readouterr() == ("", "")
