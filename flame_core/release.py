"""The official FLAME release's datasets: where they come from, their checksums, and fetching them.

The FLAME paper (Kim et al., SIGIR 2026, arXiv:2604.04038) released its code and preprocessed datasets in
the public repository woo-joo/FLAME_SIGIR26 on GitHub. :func:`fetch` downloads a dataset file from that
repository at a fixed commit, checks it against the SHA-256 recorded here and stores it in the data folder
(:func:`data_folder`), where ``load_dataset(NAME)`` and ``python -m flame_core datasets`` find it. A download
that fails or does not match keeps nothing; an existing file is never overwritten.

The release also holds ``datasets/ml-1m.txt``; we have not verified that file, so it is not listed (it
cannot be fetched without a checksum to check it against).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flame_core.utils import cache_dir, sha256_file

REPOSITORY = "woo-joo/FLAME_SIGIR26"
COMMIT = "9e874bb0f7f462251755a57cc34596db2cadcd05"
BASE_URL = f"https://raw.githubusercontent.com/{REPOSITORY}/{COMMIT}/"
URL_VARIABLE = "FLAME_RELEASE_URL"  # another base URL (a mirror); the checksums still decide
TIMEOUT = 60  # seconds without data before a download is abandoned


class FetchError(ValueError):
    """A dataset could not be fetched: unknown name, network failure or checksum mismatch; nothing was kept."""


@dataclass(frozen=True)
class ReleasedDataset:
    """One dataset file of the release: its path in the repository, size, SHA-256 and statistics."""

    name: str
    path: str
    size: int
    sha256: str
    users: int
    items: int
    interactions: int

    def url(self, base: str | None = None) -> str:
        base = base or os.environ.get(URL_VARIABLE) or BASE_URL
        return base.rstrip("/") + "/" + self.path


RELEASED = {
    d.name: d
    for d in (
        ReleasedDataset(
            name="amazon-beauty",
            path="datasets/amazon-beauty.txt",
            size=1090094,
            sha256="59ed0b9bd561c3adf98da6d29b5c4cdd8dad233426418bf5facc17bb9a684ed7",
            users=22363,
            items=12101,
            interactions=198502,
        ),
        ReleasedDataset(
            name="amazon-toys",
            path="datasets/amazon-toys.txt",
            size=922156,
            sha256="45608e642b0d04e3e02a6009e93c5723164a1fb227147579558ae619d774c9a5",
            users=19412,
            items=11924,
            interactions=167597,
        ),
        ReleasedDataset(
            name="amazon-sports",
            path="datasets/amazon-sports.txt",
            size=1707513,
            sha256="3d59d5998586e1b49f817812c1625627c0f09a5186f62ba70df610ed3e9d2e5d",
            users=35598,
            items=18357,
            interactions=296337,
        ),
        ReleasedDataset(
            name="amazon-games",
            path="datasets/amazon-games.txt",
            size=1233867,
            sha256="7e1af03e3e27b31ff548a5fe0d06847b07fdb0d2ff3f1179cda909755ddf9d75",
            users=24303,
            items=10672,
            interactions=231780,
        ),
        ReleasedDataset(
            name="yelp",
            path="datasets/yelp.txt",
            size=1977155,
            sha256="20c961eea837e0a401bbfde2b6549d875ebbe6294e5e7ee2ca07a6f52cf3d2d2",
            users=29915,
            items=21572,
            interactions=345186,
        ),
    )
}

# The datasets whose frozen network (the anchor) the release ships, as plain SASRec state dicts (ml-1m's data is
# not listed above). `python -m flame_core train --frozen FILE` and `sweep --released DIR` train FLAME from them.
RELEASED_ANCHORS = ("amazon-beauty", "amazon-games", "amazon-toys", "ml-1m")


def data_folder() -> tuple[Path, str]:
    """The data folder and how it was chosen: $FLAME_DATA_DIR when set (read now), else CACHE/data, CACHE being
    $FLAME_CACHE_DIR or ~/.cache/flame_core."""
    value = os.environ.get("FLAME_DATA_DIR")
    if value:
        return Path(value).expanduser(), "FLAME_DATA_DIR"
    return cache_dir() / "data", "default: FLAME_DATA_DIR is not set"


def state(name: str, folder: Path | None = None) -> str:
    """'available' (the file is there and matches the release), 'fetchable' (not there) or 'differs' (a file
    of that name whose content is not the release's: it is used as it is, and never overwritten)."""
    path = (folder or data_folder()[0]) / f"{name}.txt"
    if not path.is_file():
        return "fetchable"
    return "available" if sha256_file(path) == RELEASED[name].sha256 else "differs"


def fetch(
    name: str, folder: str | os.PathLike | None = None, base_url: str | None = None, log: Callable[[str], None] = print
) -> Path:
    """Download released dataset `name` into `folder` (default: :func:`data_folder`) and return its path.

    The bytes are checked against the recorded SHA-256 before the file appears under its name (written to a
    temporary file, then renamed); on any failure the temporary file is removed and FetchError says why.
    """
    if name not in RELEASED:
        raise FetchError(f"unknown dataset {name!r}; the release's datasets: {', '.join(RELEASED)}")
    entry = RELEASED[name]
    folder = Path(folder) if folder is not None else data_folder()[0]
    target = folder / f"{name}.txt"
    if target.exists():
        found = sha256_file(target)
        if found == entry.sha256:
            log(f"{name}: already in {target} (SHA-256 checked)")
            return target
        raise FetchError(
            f"{target}: exists but is not the release's file (SHA-256 {found[:12]}..., "
            f"expected {entry.sha256[:12]}...); move it away to fetch the release's"
        )
    url = entry.url(base_url)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FetchError(f"{folder}: cannot create the data folder ({err.strerror})") from None
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".download")
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 - http(s) URLs only
                    for block in iter(lambda: response.read(1 << 16), b""):
                        digest.update(block)
                        size += len(block)
                        out.write(block)
            except urllib.error.HTTPError as err:
                raise FetchError(f"{url}: HTTP {err.code} {err.reason}; nothing kept") from None
            except (TimeoutError, urllib.error.URLError, ConnectionError) as err:
                reason = getattr(err, "reason", err)
                raise FetchError(
                    f"{url}: cannot download ({reason}); nothing kept. Check the network, or download "
                    f"the file by hand into {folder}/ (its SHA-256: {entry.sha256})"
                ) from None
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != entry.sha256:
            raise FetchError(
                f"{url}: the download ({size:,} bytes) does not match the release's SHA-256 "
                f"(got {digest.hexdigest()[:12]}..., expected {entry.sha256[:12]}...); nothing kept"
            )
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log(f"{name}: {size:,} bytes from {url}, SHA-256 checked, stored as {target}")
    return target
