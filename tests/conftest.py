import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py

import pytest  # noqa: E402


def same_history(a: list[dict], b: list[dict]) -> bool:
    """Two runs' histories agree: every key but the timings, floats to float32 rounding. Exact equality across
    processes is not promised: CPU reductions may sum in another order when tensors lie at other addresses."""
    keep = lambda r: {k: v for k, v in r.items() if not k.endswith("seconds")}  # noqa: E731
    return len(a) == len(b) and all(keep(x) == pytest.approx(keep(y), rel=1e-6, abs=1e-9) for x, y in zip(a, b))


def skip_or_fail(reason: str) -> None:
    """Skip when a prerequisite is missing; under CI (the environment variable CI set) it is a failure, so a
    check can never pass CI by being skipped."""
    __tracebackhide__ = True  # reports name the caller's line
    if os.environ.get("CI"):
        pytest.fail(f"CI: {reason}")
    pytest.skip(reason)
