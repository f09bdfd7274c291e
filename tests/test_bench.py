"""bench/speed.py and bench/related.py end to end on synthetic data: every figure they print is in their JSON."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the bench package

from bench import related, speed  # noqa: E402
from flame_core.registry import REGISTRY  # noqa: E402


def test_the_benchmark_writes_every_figure_it_prints(tmp_path, capsys):
    out = tmp_path / "speed.json"
    argv = "--dataset synthetic --steps 1 --batch-size 32 --no-epoch --seed-rounds 1 --seed-workers 2".split()
    argv += ["--json", str(out)]
    assert speed.main(argv) == 0
    printed, result = capsys.readouterr().out, json.loads(out.read_text())
    assert set(result["steps_ms"]) == {"single", "flame", "flame_rec_path"}
    assert all(row["packed_ms"] > 0 and row["padded_ms"] > 0 for row in result["steps_ms"].values())
    single = result["steps_ms"]["single"]["best_ms"]
    assert result["naive_sasrec_ms"] > 0 and result["naive_over_single"] == result["naive_sasrec_ms"] / single
    assert {"x1_ms", "x3_ms", "x3_over_3_x1"} <= set(result["stacked"]["flame"])
    assert result["score_head_ms"]["autograd"] > 0 and result["eval_users"] == 200
    if "parallel_seeds" in result:  # a CPU of two cores or more
        ps = result["parallel_seeds"]
        (row,) = ps["side_by_side"]
        assert ps["seeds"] == 3 and row["workers"] == 2 and row["flame"]["over_separate"] > 0
        assert f"{row['flame']['ms']:.2f} ms ({row['flame']['over_separate']:.2f}x)" in printed
    assert f"code {result['code']}" in printed  # the commit that ran (or "unknown" outside git)
    assert f"{result['naive_sasrec_ms']:.2f}" in printed and "stacked seeds, flame" in printed


def test_the_related_benchmark_times_every_method_and_both_kl_forms(tmp_path, capsys):
    out = tmp_path / "related.json"
    assert related.main(f"--dataset synthetic --steps 1 --rounds 1 --batch-size 32 --json {out}".split()) == 0
    printed, result = capsys.readouterr().out, json.loads(out.read_text())
    assert set(result["steps_ms"]) == set(REGISTRY) and result["over_single"]["single"] == 1.0
    assert all(ms > 0 for ms in result["steps_ms"].values())
    kl = result["emkd_kl"]
    assert kl["members"] == 3 and kl["step_speedup"] == kl["pairwise_step_ms"] / kl["one_pass_step_ms"]
    assert kl["max_relative_difference"] < 1e-3  # the two forms of the KL agree in float32
    assert f"({kl['step_speedup']:.2f}x)" in printed and f"code {result['code']}" in printed
