"""Reading what the program reads back (weights, checkpoints, configurations, records) with errors that name
the file and what was expected, and writing checkpoints so that a damaged one loses at most one epoch.

- :func:`read_torch`: a torch file, loaded with ``weights_only=True`` (a file never runs code); with
  ``verify`` its zip members' CRC-32 are checked first, which catches a flipped byte that torch's own reader
  lets through.
- :func:`read_json`: a JSON file; a syntax error names ``FILE:LINE``.
- :func:`save_checkpoint` / :func:`load_checkpoint`: ``checkpoint.pt`` written atomically, the one it
  replaces kept as ``checkpoint.prev.pt``; loading verifies the newest and falls back to the previous one.

Every failure raises :class:`FileError` (a ValueError: the CLI prints it on one line and exits 2).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from flame_core.utils import atomic_torch_save

CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"
CHECKPOINT_KEYS = ("method", "optimizer", "best_weights", "state", "rng")  # what a resumable checkpoint holds


class FileError(ValueError):
    """A file the program reads is missing, damaged or of the wrong kind; the message starts with its path."""


def first_line(err: BaseException, typed: bool = False) -> str:
    """The first line of an exception's message (its type's name when the message is empty), for one-line
    errors; `typed`: prefixed with the type's name."""
    text = str(err).strip().splitlines()
    if not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text[0]}" if typed else text[0]


def _exists(path: Path, what: str) -> None:
    if not path.exists():
        raise FileError(f"{path}: no such file (expected {what})")
    if path.is_dir():
        raise FileError(f"{path}: a folder, not a file (expected {what})")


def read_torch(path: str | os.PathLike, what: str, verify: bool = False, map_location="cpu"):
    """The object in torch file `path`; `what` says what the caller expected (it goes into the error).

    `verify`: check every zip member against its CRC-32 first (torch.save always writes a zip archive).
    """
    path = Path(path)
    _exists(path, what)
    if verify and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise FileError(f"{path}: damaged: member {bad} fails its CRC-32 check; expected {what}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, KeyError...
        raise FileError(f"{path}: {_torch_problem(path, err)}; expected {what}") from None


def _torch_problem(path: Path, err: Exception) -> str:
    """Why torch.load refused a file, in a few words."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "an empty file"
    if "Weights only load failed" in str(err):
        if zipfile.is_zipfile(path):
            return (
                "holds objects other than tensors and plain values (weights are read with weights_only=True, "
                "so that a file never runs code)"
            )
        return f"not a torch file (torch.save writes a zip archive; this file starts with {head!r})"
    if head.startswith(b"PK"):
        return "a truncated or damaged torch file (its zip archive cannot be read)"
    return f"not a torch file (torch.save writes a zip archive; this file starts with {head!r})"


def read_json(path: str | os.PathLike, what: str):
    """The value in JSON file `path`; a syntax error or a non-UTF-8 byte names the file and line."""
    path = Path(path)
    _exists(path, what)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise FileError(f"{path}: not UTF-8 text (byte {err.start}); expected {what}") from None
    except json.JSONDecodeError as err:
        raise FileError(
            f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno}); expected {what}"
        ) from None


def require(obj, keys: tuple[str, ...], path: str | os.PathLike, what: str) -> None:
    """Raise FileError unless `obj` is a dict holding every key of `keys`."""
    if not isinstance(obj, dict):
        raise FileError(f"{path}: holds a {type(obj).__name__}, expected {what}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise FileError(f"{path}: no {', '.join(map(repr, missing))} inside; expected {what}")


def save_checkpoint(folder: str | os.PathLike, obj: dict) -> Path:
    """Write folder/checkpoint.pt atomically; the checkpoint it replaces becomes checkpoint.prev.pt.

    The new file is complete on disk before either rename, so at every moment a complete checkpoint exists
    under one of the two names (between the renames, only the previous one).
    """
    folder = Path(folder)
    atomic_torch_save(folder / CHECKPOINT, obj, previous=folder / PREVIOUS)
    return folder / CHECKPOINT


def load_checkpoint(
    folder: str | os.PathLike,
    map_location="cpu",
    keys: tuple[str, ...] = CHECKPOINT_KEYS,
    log: Callable[[str], None] = print,
) -> dict | None:
    """The newest usable checkpoint of `folder` (verified, holding `keys`), or None when there is none.

    A damaged or incomplete checkpoint.pt is reported through `log` and checkpoint.prev.pt, one epoch older,
    is used instead; when both exist and both are damaged, FileError names both.
    """
    folder = Path(folder)
    what = "a training checkpoint written by flame_core"
    problems = []
    for name in (CHECKPOINT, PREVIOUS):
        path = folder / name
        if not path.exists():
            continue
        try:
            ckpt = read_torch(path, what, verify=True, map_location=map_location)
            require(ckpt, keys, path, what)
        except FileError as err:
            problems.append(str(err))
            continue
        if name == PREVIOUS:
            why = problems[0] if problems else f"{folder / CHECKPOINT}: missing (interrupted while replacing it)"
            log(f"warning: {why}; resuming from the previous checkpoint {path} instead (one epoch older)")
        return ckpt
    if problems:
        raise FileError("; ".join(problems) + " (no usable checkpoint: start afresh with --overwrite)")
    return None
