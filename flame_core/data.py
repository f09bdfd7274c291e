"""Datasets and the leave-one-out protocol (README, "The protocol").

- :func:`read_sequences`: the release format, one user per line ``user item item ...``, integer ids,
  items chronological, 1-based (0 is padding), blank lines ignored; errors name ``FILE:LINE``. Users with
  fewer than 3 items cannot be split: they are dropped and counted (``Interactions.num_dropped``).
- :func:`load_movielens_100k`: MovieLens-100K read from the installed ``recbole`` package (never copied
  into the repository), sorted, 5-core filtered and remapped.
- :func:`synthetic`: a small seeded dataset with known multi-interest structure, for unit tests.
- :func:`load_dataset`: a name or a path; the release's datasets (and any ``NAME.txt``) are found by name
  in the data folder: ``$FLAME_DATA_DIR`` (read at call time, e.g. ``../shared/data``), else the folder that
  ``python -m flame_core datasets fetch`` fills (`flame_core.release`).

Splitting (:func:`build_split`): each user's last ``keep`` items form the window ``w`` (default
``max_len + 3``, the official release's truncation). Every prefix of ``w[:-2]`` predicts its next item
(training), ``w[:-2]`` predicts ``w[-2]`` (validation) and ``w[:-1]`` predicts ``w[-1]`` (test). All
tensors are built once, vectorised with numpy, as int64 and left-padded with 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flame_core import release

MIN_ITEMS = 3  # fewest items that split: a validation input, a validation target, a test target
CORE = 5  # k of the k-core filter applied to MovieLens-100K
ML_100K = {"users": 943, "items": 1349, "interactions": 99287}  # after the 5-core filter (a test checks them)
SYNTHETIC = {"users": 200, "items": 100, "interactions": 3666}  # synthetic() with its defaults
INSTALL_HINT = "pip install --no-deps recbole==1.2.1"
MAX_ID = 2**63 - 1  # ids are stored as int64
SPARSE_FACTOR, SPARSE_FLOOR = 4, 1_000_000  # refused: a largest item id above both 4x the distinct ids and 1e6


class DatasetError(ValueError):
    """Raised for malformed input; message starts with 'FILE:LINE: ' and says what was expected.

    Lookup failures (an unknown dataset name, a missing package file) raise it too, with a message that
    says which names are available and how to make the data visible.
    """


@dataclass(frozen=True)
class Interactions:
    """Chronological item sequences of one dataset.

    ``sequences`` holds one list per kept user (file order), ids 1..num_items (0 is padding).
    ``num_items`` is the largest item id of the source (ids are dense for the shipped datasets); it sizes
    the item table. ``num_dropped`` counts users dropped for having fewer than 3 items.
    """

    name: str
    sequences: list[list[int]]
    num_items: int
    num_dropped: int
    source: str

    def stats(self) -> dict:
        """Summary counts: dataset, users, items, interactions, mean_length (2 decimals), dropped_users."""
        interactions = sum(map(len, self.sequences))
        users = len(self.sequences)
        mean_length = round(interactions / users, 2) if users else 0.0
        return {
            "dataset": self.name,
            "users": users,
            "items": self.num_items,
            "interactions": interactions,
            "mean_length": mean_length,
            "dropped_users": self.num_dropped,
        }

    def fingerprint(self) -> str:
        """Short sha1 (16 hex digits) of ``num_items`` and the sequences, for caching derived results."""
        lengths = np.fromiter(map(len, self.sequences), dtype="<i8", count=len(self.sequences))
        flat = np.fromiter(itertools.chain.from_iterable(self.sequences), "<i8", count=int(lengths.sum()))
        digest = hashlib.sha1(np.array([self.num_items], dtype="<i8").tobytes())
        digest.update(lengths.tobytes())
        digest.update(flat.tobytes())
        return digest.hexdigest()[:16]


def _is_int_token(token: str) -> bool:
    """True for an ASCII decimal integer with an optional leading minus (what the format allows)."""
    digits = token[1:] if token.startswith("-") else token
    return digits.isascii() and digits.isdigit()


def _parse_ids(parts: list[str], line: str, where: str) -> list[int]:
    """Integers of one line's tokens; ``int()`` alone would also accept '+1', '1_0' and non-ASCII digits."""
    try:
        ids = list(map(int, parts))
        strict = "_" not in line and "+" not in line and line.isascii()
    except ValueError:
        ids, strict = [], False
    if not strict:  # rare: check each token (a token int() rejected always fails _is_int_token)
        bad = next((t for t in parts if not _is_int_token(t)), None)
        if bad is not None:
            raise DatasetError(f"{where}: expected integer ids, got {bad!r} (format: 'user item item ...')")
    return ids


def _check_line(ids: list[int], where: str, seen: dict[int, int], lineno: int) -> None:
    """Validate one parsed line: positive ids, a new user, at least one item."""
    user, items = ids[0], ids[1:]
    if max(ids) > MAX_ID:
        raise DatasetError(f"{where}: id {max(ids)} is too large; expected ids up to {MAX_ID} (2^63 - 1)")
    if user <= 0:
        raise DatasetError(f"{where}: expected a positive user id (ids are 1-based), got {user}")
    if user in seen:
        raise DatasetError(f"{where}: duplicate user {user} (first seen on line {seen[user]})")
    if not items:
        raise DatasetError(f"{where}: user {user} has no items; expected 'user item item ...'")
    if min(items) <= 0:
        bad = next(i for i in items if i <= 0)
        raise DatasetError(f"{where}: expected positive item ids (1-based, 0 is padding), got {bad}")
    seen[user] = lineno


def read_sequences(path: str | os.PathLike, name: str | None = None) -> Interactions:
    """Read a ``user item item ...`` file (see the module docstring); ``name`` defaults to the file's stem.

    ``num_items`` is the largest item id in the file, dropped users included, so ids keep their meaning.
    Raises :class:`DatasetError` (``FILE:LINE: ...``) for a malformed line or a file without usable users,
    FileNotFoundError for a missing file.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: a folder, not a dataset file; expected lines 'user item item ...'")
    sequences: list[list[int]] = []
    seen: dict[int, int] = {}
    distinct: set[int] = set()
    num_items = num_dropped = lineno = top_line = 0
    with path.open("rb") as handle:  # bytes, decoded line by line, so that a bad byte names its line
        for lineno, raw in enumerate(handle, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DatasetError(
                    f"{where}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    "expected lines 'user item item ...'"
                ) from None
            parts = line.split()
            if not parts:
                continue
            ids = _parse_ids(parts, line, where)
            _check_line(ids, where, seen, lineno)
            distinct.update(ids[1:])
            top = max(ids[1:])
            if top > num_items:
                num_items, top_line = top, lineno
            if len(ids) - 1 < MIN_ITEMS:
                num_dropped += 1
            else:
                sequences.append(ids[1:])
    if num_items > max(SPARSE_FACTOR * len(distinct), SPARSE_FLOOR):
        raise DatasetError(
            f"{path}:{top_line}: item id {num_items} is far above the {len(distinct)} distinct item ids of the file; "
            f"the item table has a row per id up to the largest, so renumber the items 1..{len(distinct)}"
        )
    if not sequences:
        raise DatasetError(
            f"{path}:{max(lineno, 1)}: no user with at least {MIN_ITEMS} items "
            f"({num_dropped} shorter users dropped); expected lines 'user item item ...'"
        )
    return Interactions(name or path.stem, sequences, num_items, num_dropped, str(path))


def _movielens_path() -> Path | None:
    """Path of ``ml-100k.inter`` inside the installed recbole package (located, not imported), or None."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "dataset_example" / "ml-100k" / "ml-100k.inter"
        if candidate.is_file():
            return candidate
    return None


def _read_atomic_rows(path: Path) -> list[tuple[str, str, float]]:
    """(user token, item token, timestamp) rows of a RecBole atomic ``.inter`` file, in file order."""
    with path.open(encoding="utf-8") as handle:
        header = [field.split(":")[0] for field in handle.readline().rstrip("\n").split("\t")]
        needed = ("user_id", "item_id", "timestamp")
        if not all(field in header for field in needed):
            raise DatasetError(f"{path}:1: expected a header with columns {needed}, got {header}")
        u, i, t = (header.index(field) for field in needed)
        rows = []
        for lineno, line in enumerate(handle, start=2):
            fields = line.rstrip("\n").split("\t")
            if fields == [""]:
                continue
            try:
                rows.append((fields[u], fields[i], float(fields[t])))
            except (IndexError, ValueError):
                raise DatasetError(
                    f"{path}:{lineno}: expected {len(header)} tab-separated fields with a numeric timestamp"
                ) from None
    return rows


def _k_core(rows: list[tuple[str, str, float]], k: int) -> list[tuple[str, str, float]]:
    """Drop users and items with fewer than ``k`` interactions, repeatedly, until nothing changes."""
    while True:
        users = Counter(row[0] for row in rows)
        items = Counter(row[1] for row in rows)
        kept = [row for row in rows if users[row[0]] >= k and items[row[1]] >= k]
        if len(kept) == len(rows):
            return kept
        rows = kept


def _token_key(token: str) -> tuple[int, int, str]:
    """Sort key of an id token: numeric tokens by value first, any others after them as strings."""
    return (0, int(token), "") if token.isdigit() else (1, 0, token)


def load_movielens_100k() -> Interactions:
    """MovieLens-100K as shipped by ``recbole==1.2.1`` (``dataset_example/ml-100k/ml-100k.inter``).

    Every rating counts as an interaction (no rating threshold). Steps: iterative 5-core filter of users
    and items; each user's items sorted by (timestamp, file order); users ordered by their original id
    (numerically) and renumbered 1..U in that order; items numbered 1..I in order of first appearance when
    walking those users' chronological sequences in order.
    """
    path = _movielens_path()
    if path is None:
        raise DatasetError(f"ml-100k: recbole's ml-100k.inter was not found; install it: {INSTALL_HINT}")
    rows = _k_core(_read_atomic_rows(path), CORE)
    by_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for user, item, timestamp in rows:
        by_user[user].append((timestamp, item))
    item_ids: dict[str, int] = {}
    sequences = []
    for user in sorted(by_user, key=_token_key):
        events = sorted(by_user[user], key=lambda event: event[0])  # stable: ties keep file order
        sequences.append([item_ids.setdefault(item, len(item_ids) + 1) for _, item in events])
    num_dropped = sum(len(seq) < MIN_ITEMS for seq in sequences)  # 0 after a 5-core, kept for safety
    sequences = [seq for seq in sequences if len(seq) >= MIN_ITEMS]
    return Interactions("ml-100k", sequences, len(item_ids), num_dropped, str(path))


def _synthetic_user(rng: np.random.Generator, clusters: list[np.ndarray], length: int) -> list[int]:
    """One user's walk: mostly the next item of the current cluster, sometimes a jump to an interest."""
    interests = rng.choice(len(clusters), size=min(int(rng.integers(1, 3)), len(clusters)), replace=False)
    cluster = clusters[interests[0]]
    pos = int(rng.integers(len(cluster)))
    items = [int(cluster[pos])]
    for _ in range(length - 1):
        if rng.random() < 0.7:
            pos = (pos + 1) % len(cluster)  # the cluster's next item, cyclically
        else:
            cluster = clusters[interests[int(rng.integers(len(interests)))]]
            pos = int(rng.integers(len(cluster)))
        items.append(int(cluster[pos]))
    return items


def synthetic(
    num_users: int = 200,
    num_items: int = 100,
    num_interests: int = 4,
    min_len: int = 5,
    max_len: int = 30,
    seed: int = 0,
) -> Interactions:
    """A seeded dataset with known structure, deterministic for a given seed (own numpy Generator).

    Items 1..num_items are cut into ``num_interests`` contiguous clusters. Each user holds 1 or 2 interests
    and a length drawn uniformly from [min_len, max_len]; it starts at a random item of one interest, then
    with probability 0.7 moves to the next item of the current cluster (cyclically), else to a random item
    of one of its interests (possibly switching). A sequential model can learn both rules.
    """
    if not 1 <= num_interests <= num_items:
        raise ValueError(f"need 1 <= num_interests <= num_items, got {num_interests} and {num_items}")
    if not MIN_ITEMS <= min_len <= max_len:
        raise ValueError(f"need {MIN_ITEMS} <= min_len <= max_len, got {min_len} and {max_len}")
    if num_users < 1:
        raise ValueError(f"need num_users >= 1, got {num_users}")
    rng = np.random.default_rng(seed)
    clusters = np.array_split(np.arange(1, num_items + 1), num_interests)
    lengths = rng.integers(min_len, max_len + 1, size=num_users)
    sequences = [_synthetic_user(rng, clusters, int(n)) for n in lengths]
    source = (
        f"synthetic(num_users={num_users}, num_items={num_items}, num_interests={num_interests}, "
        f"min_len={min_len}, max_len={max_len}, seed={seed})"
    )
    return Interactions("synthetic", sequences, num_items, 0, source)


def available_datasets() -> list[dict]:
    """Every dataset the library knows, with where it is and its state, in the order `datasets` lists them.

    Each dict: name, state ("available", "fetchable", "differs" (a file of a released name whose content is
    not the release's; used as it is), "not installed"), source (a path, a package or how to get it), and the
    statistics recorded for it (users, items, interactions; None for a file found in the data folder only).
    """
    movielens = _movielens_path()
    found = [
        {
            "name": "ml-100k",
            "state": "available" if movielens else "not installed",
            "source": str(movielens) if movielens else f"the recbole package: {INSTALL_HINT}",
            **ML_100K,
        },
        {
            "name": "synthetic",
            "state": "available",
            "source": "generated (flame_core.data.synthetic, seeded)",
            **SYNTHETIC,
        },
    ]
    folder, _ = release.data_folder()
    for name, entry in release.RELEASED.items():
        state = release.state(name, folder) if folder.is_dir() else "fetchable"
        source = f"python -m flame_core datasets fetch {name}" if state == "fetchable" else str(folder / f"{name}.txt")
        found.append(
            {
                "name": name,
                "state": state,
                "source": source,
                "users": entry.users,
                "items": entry.items,
                "interactions": entry.interactions,
            }
        )
    if folder.is_dir():
        for path in sorted(folder.glob("*.txt")):
            if path.stem not in release.RELEASED:
                found.append(
                    {
                        "name": path.stem,
                        "state": "available",
                        "source": str(path),
                        "users": None,
                        "items": None,
                        "interactions": None,
                    }
                )
    return found


def load_dataset(name_or_path: str) -> Interactions:
    """The dataset `name_or_path` names: "ml-100k", "synthetic" (default arguments), an existing file, or a
    name: NAME.txt in the data folder ($FLAME_DATA_DIR, else the default that `python -m flame_core datasets
    fetch` fills)."""
    if name_or_path == "ml-100k":
        return load_movielens_100k()
    if name_or_path == "synthetic":
        return synthetic()
    if Path(name_or_path).is_file():
        return read_sequences(name_or_path)
    folder, how = release.data_folder()
    candidate = folder / f"{name_or_path}.txt"
    if candidate.is_file():
        return read_sequences(candidate, name=name_or_path)
    names = [d["name"] for d in available_datasets() if d["state"] in ("available", "differs")]
    where = f"{folder} ({how})" + ("" if folder.is_dir() else ", which does not exist")
    hint = (
        f"Fetch it: python -m flame_core datasets fetch {name_or_path}"
        if name_or_path in release.RELEASED
        else "Set FLAME_DATA_DIR to the folder holding NAME.txt files, or give a path"
    )
    raise DatasetError(
        f"unknown dataset {name_or_path!r}: not a file and not in the data folder {where}. "
        f"Available: {', '.join(names)}. {hint}."
    )


@dataclass
class Split:
    """All tensors of one dataset's leave-one-out protocol, built once (int64, left-padded with 0).

    ``train_inputs`` (X, L) and ``train_targets`` (X,) hold every training prefix; the histories (U, W) hold
    each user's full validation/test input with W = max(max_len, longest test input), so the model input
    ``history[:, -L:]`` is always (U, L) and the whole history is available for excluding seen items.
    S counts training samples and U users (both are the B axis once batched).
    """

    max_len: int
    num_items: int
    train_inputs: torch.Tensor  # (X, L)
    train_targets: torch.Tensor  # (X,)
    valid_history: torch.Tensor  # (U, W) w[:-2]
    valid_targets: torch.Tensor  # (U,) w[-2]
    test_history: torch.Tensor  # (U, W) w[:-1]
    test_targets: torch.Tensor  # (U,) w[-1]

    def to(self, device: torch.device | str) -> Split:
        """A copy with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **moved)

    def inputs(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs (U, L), targets (U,), history (U, W)) of ``split`` in {"valid", "test"}."""
        if split == "valid":
            history, targets = self.valid_history, self.valid_targets
        elif split == "test":
            history, targets = self.test_history, self.test_targets
        else:
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        return history[:, -self.max_len :], targets, history  # (U, L), (U,), (U, W)


def _left_padded(flat: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> torch.Tensor:
    """Rows ``flat[start:end]`` cut to their last ``width`` items and left-padded with flat[0] == 0."""
    index = ends[:, None] - width + np.arange(width)  # (R, width)
    index = np.where(index >= starts[:, None], index, 0)  # (R, width) positions before the start -> padding
    return torch.from_numpy(np.ascontiguousarray(flat[index]))


def build_split(data: Interactions, max_len: int = 50, keep: int | None = -1) -> Split:
    """Leave-one-out tensors of ``data`` (see the module docstring).

    ``keep``: each user's last ``keep`` items are kept before splitting; -1 (default) means
    ``max_len + 3`` (the official release), None keeps everything. Samples are ordered by user (file
    order), then by increasing prefix length.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    keep = max_len + 3 if keep == -1 else keep
    if keep is not None and keep < MIN_ITEMS:
        raise ValueError(f"keep must be -1, None or >= {MIN_ITEMS}, got {keep}")
    windows = [seq[-keep:] for seq in data.sequences] if keep is not None else data.sequences
    lengths = np.fromiter(map(len, windows), dtype=np.int64, count=len(windows))  # (U,)
    if lengths.size == 0 or lengths.min() < MIN_ITEMS:
        raise ValueError(f"build_split needs at least one user and {MIN_ITEMS} items per user")
    flat = np.zeros(1 + int(lengths.sum()), dtype=np.int64)  # flat[0] = 0 is the padding source
    flat[1:] = np.fromiter(itertools.chain.from_iterable(windows), dtype=np.int64, count=flat.size - 1)
    starts = 1 + np.cumsum(lengths) - lengths  # (U,) index in flat of each window's first item
    counts = lengths - MIN_ITEMS  # (U,) training samples per user: prefixes t = 1..n-3
    owner = np.repeat(np.arange(lengths.size), counts)  # (X,)
    t = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts) + 1  # (X,) prefix lengths
    ends = starts[owner] + t  # (X,) the target's index in flat
    width = max(max_len, int(lengths.max()) - 1)
    return Split(
        max_len=max_len,
        num_items=data.num_items,
        train_inputs=_left_padded(flat, starts[owner], ends, max_len),  # (X, L)
        train_targets=torch.from_numpy(flat[ends]),  # (X,)
        valid_history=_left_padded(flat, starts, starts + lengths - 2, width),  # (U, W)
        valid_targets=torch.from_numpy(flat[starts + lengths - 2]),  # (U,)
        test_history=_left_padded(flat, starts, starts + lengths - 1, width),  # (U, W)
        test_targets=torch.from_numpy(flat[starts + lengths - 1]),  # (U,)
    )
