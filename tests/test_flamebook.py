"""The book's helpers that turn committed records into the main table and the convergence comparison,
checked on hand-made records."""

import numpy as np
import pandas as pd
import pytest

import flamebook
from flame_core.analysis import paired_comparison, time_to_reach, user_ndcg
from flame_core.metrics import encode_ranks
from flamebook import released


def rec(method, seed, ranks, history, anchor=None, dataset="toy"):
    ndcg = 100 * user_ndcg(ranks).mean()
    return {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "converged": True,
        "device": "cpu",
        "test": {"NDCG@20": ndcg, "HR@20": 100 * float((np.asarray(ranks) < 20).mean())},
        "test_ranks": encode_ranks(ranks),
        "history": history,
        "pretrained": anchor or [],
    }


def hist(values, seconds=10.0):
    return [{"epoch": e + 1, "valid/NDCG@20": v, "train_seconds": seconds} for e, v in enumerate(values)]


def test_the_main_table_compares_with_single_per_user_and_says_what_was_not_run():
    rng = np.random.default_rng(0)
    single_ranks = [rng.integers(0, 60, 500) for _ in range(2)]
    better = [np.maximum(r - 3, 0) for r in single_ranks]  # every user's target 3 places higher
    anchor = [{"origin": "pretrained", "train_seconds": 50.0}]
    records = [rec("single", s, single_ranks[i], hist([1, 2, 3])) for i, s in enumerate((42, 43))]
    records += [rec("flame", s, better[i], hist([2, 3]), anchor) for i, s in enumerate((42, 43))]
    numbers = flamebook.main_numbers(records, ["toy", "other"], ["Single", "FLAME", "EMKD"])
    table = flamebook.main_table(numbers)
    flame = table.loc[("toy", "FLAME")]
    per_user = lambda ranks: np.mean([user_ndcg(r) for r in ranks], 0)  # noqa: E731  (over the two seeds)
    expected = paired_comparison(per_user(better), per_user(single_ranks))
    assert flame["seeds"] == "42, 43" and flame["converged"] == "2/2"
    assert flame[flamebook.DELTA].startswith(f"{expected['mean_diff']:+.2f}")
    assert float(flame[flamebook.P_VALUE]) < 1e-6 and float(flame[flamebook.GAIN]) > 0
    assert numbers.loc[("toy", "FLAME"), "mean diff"] == pytest.approx(expected["mean_diff"])
    assert flamebook.verdict(numbers.loc[("toy", "FLAME")]) == "significantly better than"
    worse = numbers.loc[("toy", "FLAME")].copy()
    worse["mean diff"], worse["side"] = -worse["mean diff"], -worse["side"]
    assert flamebook.verdict(worse) == "significantly worse than"
    assert flamebook.verdict(numbers.loc[("toy", "Single")]) == "not distinguishable from"  # the baseline itself
    assert table.loc[("toy", "Single"), flamebook.P_VALUE] == "baseline"
    assert (table.loc[("toy", "EMKD")] == "not run").all() and (table.loc[("other", "FLAME")] == "not run").all()
    one_seed = flamebook.main_numbers(
        [*records, rec("emkd", 42, single_ranks[0], hist([1]))], ["toy"], ["Single", "FLAME", "EMKD", "CKD"]
    )
    sentence = flamebook.records_sentence(one_seed.loc["toy"])
    assert f"FLAME {flame['NDCG@20']} (seeds 42, 43)" in sentence and "(seed 42);" in sentence
    emkd = flamebook.main_table(one_seed).loc[("toy", "EMKD")]
    on = "on seed 42, the only one both ran"  # Single ran two seeds, EMKD one: the comparison names it
    assert f"EMKD {emkd[flamebook.DELTA]} points {on} (Wilcoxon p = {emkd[flamebook.P_VALUE]})" in sentence
    assert f"FLAME {flame[flamebook.DELTA]} points (Wilcoxon p = {flame[flamebook.P_VALUE]})" in sentence
    assert sentence.endswith("not run: CKD")
    unranked = [{**r, "test_ranks": None} if r["method"] == "flame" else r for r in records]
    cells = flamebook.main_table(flamebook.main_numbers(unranked, ["toy"], ["Single", "FLAME"])).loc[("toy", "FLAME")]
    assert cells[flamebook.GAIN] == flame[flamebook.GAIN] and cells[flamebook.P_VALUE] == "ranks not stored"
    variants = ["Single", "FLAME (released anchor)"]
    released = flamebook.main_table(flamebook.main_numbers(records, ["amazon-toys", "toy"], variants))
    assert (released.loc[("amazon-toys", "FLAME (released anchor)")] == "not run").all()  # the release has one
    assert (released.loc[("toy", "FLAME (released anchor)")] == "no released anchor").all()


def test_the_per_user_sentence_names_the_seeds_where_a_row_lacks_some_of_singles():
    rng = np.random.default_rng(1)
    single = {s: rng.integers(0, 60, 300) for s in (42, 43, 44)}
    flame = {s: np.maximum(r - 2, 0) for s, r in single.items()}
    records = [rec("single", s, r, hist([1])) for s, r in single.items()]

    def text(flame_seeds, ranked=True):
        runs = [rec("flame", s, flame[s], hist([1])) for s in flame_seeds]
        runs = runs if ranked else [{**r, "test_ranks": None} for r in runs]
        numbers = flamebook.main_numbers(records + runs, ["toy"], ["Single", "FLAME"]).loc["toy"]
        return numbers.loc["FLAME"], flamebook.per_user_text(numbers.loc["FLAME"], numbers.loc["Single"])

    row, sentence = text((42, 43))
    mean_over = lambda runs: np.mean([user_ndcg(runs[s]) for s in (42, 43)], 0)  # noqa: E731
    assert row["paired seeds"] == (42, 43)
    assert row["mean diff"] == pytest.approx(paired_comparison(mean_over(flame), mean_over(single))["mean_diff"])
    delta, p = flamebook.delta_text(row), flamebook.p_text(row)
    assert sentence == f"per user on seeds 42, 43, the only ones both ran, {delta} points, Wilcoxon p = {p}"
    assert text((44,))[1].startswith("per user on seed 44, the only one both ran, +")
    assert text((42, 43, 44))[1].startswith("per user on the seeds both ran, +")
    assert text((42,), ranked=False)[1] == "per user: ranks not stored"


def test_flame_is_compared_with_ensemble_guide_only_where_both_trained_from_one_anchor():
    rng = np.random.default_rng(2)
    guide = {s: rng.integers(0, 60, 300) for s in (42, 43)}
    flame = {s: np.maximum(r - 2, 0) for s, r in guide.items()}
    anchor = lambda key: [{"origin": "pretrained", "key": key}]  # noqa: E731
    records = [rec("ensemble_guide", s, r, hist([1]), anchor("ddb03e19aa")) for s, r in guide.items()]
    records += [rec("flame", s, r, hist([1]), anchor("ddb03e19aa")) for s, r in flame.items()]
    sentence = flamebook.modules_sentence(records, "toy")
    over = lambda runs: np.mean([user_ndcg(runs[s]) for s in (42, 43)], 0)  # noqa: E731
    expected = paired_comparison(over(flame), over(guide))
    gain = 100 * (
        np.mean([user_ndcg(r).mean() for r in flame.values()]) / np.mean([user_ndcg(r).mean() for r in guide.values()])
        - 1
    )
    assert sentence.startswith(
        "FLAME against Ensemble-Guide, which trains from the same frozen anchor (content key `ddb03e19`)"
    )
    assert f"{gain:+.1f}% test NDCG@20 (per user on the seeds both ran, {expected['mean_diff']:+.2f} [" in sentence
    assert sentence.endswith("significantly better than Ensemble-Guide")
    other = [{**r, "pretrained": anchor("0123abcd")} if r["method"] == "flame" else r for r in records]
    assert flamebook.modules_sentence(other, "toy") == ""  # different anchors: the comparison would mix two effects
    assert flamebook.modules_sentence(records[:2], "toy") == ""  # FLAME not run


def test_the_verdict_follows_the_signed_ranks_and_says_where_the_mean_disagrees():
    # 30 users move up one place (5 -> 4), three fall out of the top 20 from the first place: the signed ranks
    # favour FLAME (many small gains), the mean does not (three large losses), and the other 367 users tie
    single = np.full(400, 50)
    single[:30], single[30:33] = 5, 0
    flame = single.copy()
    flame[:30], flame[30:33] = 4, 50
    c = paired_comparison(user_ndcg(flame), user_ndcg(single))
    assert c["wilcoxon_side"] == 1 and c["mean_diff"] < 0 and c["wilcoxon_p"] < 0.05 < c["t_p"]
    anchor = [{"origin": "pretrained", "train_seconds": 1.0}]
    records = [rec("single", 42, single, hist([1])), rec("flame", 42, flame, hist([1]), anchor)]
    row = flamebook.main_numbers(records, ["toy"], ["Single", "FLAME"]).loc[("toy", "FLAME")]
    assert flamebook.verdict(row) == "significantly better than"
    assert flamebook.disagreement(row) == (
        "; only the Wilcoxon test, which ranks the per-user differences, finds it: the 95% interval of their "
        f"mean includes zero (paired t-test p = {c['t_p']:.2g})"
    )
    both = row.copy()
    both["t p"] = 0.01
    assert flamebook.disagreement(both).startswith("; their mean points the other way: the 95% interval of their")
    both["mean diff"] = -both["mean diff"]  # both tests find a gain
    assert flamebook.disagreement(both) == ""
    mean_only = both.copy()
    mean_only["p"] = 0.2
    assert flamebook.verdict(mean_only) == "not distinguishable from"
    assert "does not find it, while the 95% interval of their mean excludes zero" in flamebook.disagreement(mean_only)
    assert flamebook.disagreement(flamebook.main_numbers(records, ["toy"], ["Single"]).loc[("toy", "Single")]) == ""


def test_convergence_counts_seconds_to_singles_best_with_and_without_the_anchor():
    anchor = [{"origin": "pretrained", "train_seconds": 40.0}]
    records = [
        rec("single", 42, [1, 2], hist([1.0, 2.0, 3.0, 2.5], seconds=10.0)),  # best 3.0 after 30 s
        rec("flame", 42, [1, 2], hist([2.0, 3.1, 3.2], seconds=5.0), anchor),
    ]  # reaches 3.0 after 10 s
    (row,) = flamebook.convergence_vs_single(records, "toy").to_dict(orient="records")
    assert row["Single epochs"] == 3 and row["Single s"] == 30.0 and row["FLAME epochs"] == 2 and row["FLAME s"] == 10.0
    assert row["speed-up (s)"] == pytest.approx(3.0) and row["speed-up incl. anchor (s)"] == pytest.approx(30 / 50)
    assert row["speed-up (epochs)"] == pytest.approx(1.5)
    slow = [records[0], rec("flame", 42, [1, 2], hist([1.0, 2.0]), anchor)]
    (never,) = flamebook.convergence_vs_single(slow, "toy").to_dict(orient="records")
    assert not never["reached"] and np.isnan(never["speed-up (s)"])
    elsewhere = [records[0], {**records[1], "device": "cuda"}]
    (apart,) = flamebook.convergence_vs_single(elsewhere, "toy").to_dict(orient="records")
    assert not apart["timed alike"] and np.isnan(apart["speed-up (s)"]) and np.isnan(apart["speed-up incl. anchor (s)"])
    assert apart["reached"] and apart["speed-up (epochs)"] == pytest.approx(1.5)  # epochs compare across devices
    released = [records[0], rec("flame", 42, [1, 2], hist([2.0, 3.1, 3.2], seconds=5.0), [{"origin": "file"}])]
    (from_file,) = flamebook.convergence_vs_single(released, "toy", name="FLAME (released anchor)").to_dict("records")
    assert from_file["speed-up (s)"] == pytest.approx(3.0) and np.isnan(from_file["anchor s"])
    assert np.isnan(from_file["speed-up incl. anchor (s)"])  # the release's pretraining seconds are unknown
    assert time_to_reach(hist([1, 2]), 5) is None


def test_seconds_compare_only_between_records_that_name_one_machine():
    cpu = {"name": "AMD EPYC", "cores": 2, "threads": 1}
    single = {**rec("single", 42, [1, 2], hist([1.0, 2.0, 3.0], seconds=10.0)), "machine": cpu}
    flame = rec("flame", 42, [1, 2], hist([2.0, 3.1], seconds=5.0), [{"origin": "pretrained", "train_seconds": 40.0}])
    machines = {"same": cpu, "threads": {**cpu, "threads": 2}, "unnamed": None}
    tables = {
        label: flamebook.convergence_table([single, {**flame, "machine": machine}], ["toy"], ["FLAME"])
        for label, machine in machines.items()
    }
    rows = {label: table.iloc[0] for label, table in tables.items()}
    assert rows["same"]["machine"] == "same" and rows["same"]["speed-up (s)"] == pytest.approx(3.0)
    assert rows["threads"]["machine"] == "different" and not rows["threads"]["timed alike"]
    assert np.isnan(rows["threads"]["speed-up (s)"]) and rows["threads"]["speed-up (epochs)"] == pytest.approx(1.5)
    assert rows["unnamed"]["machine"] == "not recorded" and rows["unnamed"]["speed-up (s)"] == pytest.approx(3.0)
    summary = {label: flamebook.convergence_summary(tables[label]).iloc[0] for label in ("same", "unnamed")}
    said = {label: flamebook.convergence_sentence("toy", "FLAME", row) for label, row in summary.items()}
    assert summary["same"]["machines named"] == "1/1" and summary["unnamed"]["machines named"] == "0/1"
    assert "3.00x as fast" in said["unnamed"] and "3.00x as fast" in said["same"]
    assert rows["same"]["anchor s"] == 40.0  # the anchor names no machine: its seconds count
    other = {**cpu, "name": "another CPU"}
    moved = {**flame, "machine": cpu, "pretrained": [{"origin": "pretrained", "train_seconds": 40.0, "machine": other}]}
    (elsewhere,) = flamebook.convergence_vs_single([single, moved], "toy").to_dict(orient="records")
    assert np.isnan(elsewhere["anchor s"]) and np.isnan(elsewhere["speed-up incl. anchor (s)"])  # another machine's
    assert elsewhere["speed-up (s)"] == pytest.approx(3.0)
    assert "its pair of records does not both name the machine" in said["unnamed"]
    assert "name the machine" not in said["same"]
    pairs = pd.concat([tables["same"], tables["unnamed"].assign(seed=43)])  # two seeds, one pair unnamed
    two = flamebook.convergence_sentence("toy", "FLAME", flamebook.convergence_summary(pairs).iloc[0])
    assert "1 of its 2 pairs of records does not both name the machine" in two


def test_cpu_records_compare_by_cpu_seconds_where_every_epoch_logged_them():
    def timed(values, wall, cpu):
        return [{**row, "train_cpu_seconds": cpu} for row in hist(values, seconds=wall)]

    anchor = [{"origin": "pretrained", "train_seconds": 90.0, "train_cpu_seconds": 8.0}]
    single = rec("single", 42, [1, 2], timed([1.0, 2.0, 3.0], wall=10.0, cpu=4.0))  # best 3.0 after 12 CPU s
    busy = rec("flame", 42, [1, 2], timed([2.0, 3.1], wall=50.0, cpu=2.0), anchor)  # wall seconds beside other work
    (row,) = flamebook.convergence_vs_single([single, busy], "toy").to_dict(orient="records")
    assert row["clock"] == "CPU" and row["Single s"] == 12.0 and row["FLAME s"] == 4.0 and row["anchor s"] == 8.0
    assert row["speed-up (s)"] == pytest.approx(3.0) and row["speed-up incl. anchor (s)"] == pytest.approx(1.0)
    summary = flamebook.convergence_summary(flamebook.convergence_table([single, busy], ["toy"], ["FLAME"])).iloc[0]
    said = flamebook.convergence_sentence("toy", "FLAME", summary)
    assert "3.00x as fast as Single in CPU seconds without its anchor's pretraining" in said
    no_cpu_anchor = {**busy, "pretrained": [{"origin": "pretrained", "train_seconds": 90.0}]}
    (row,) = flamebook.convergence_vs_single([single, no_cpu_anchor], "toy").to_dict(orient="records")
    assert row["speed-up (s)"] == pytest.approx(3.0) and np.isnan(row["speed-up incl. anchor (s)"])
    curves = flamebook.record_curves([single, busy], "toy", ["Single", "FLAME"])  # the figure beside Table 5
    assert (curves["clock"] == "CPU").all() and curves["seconds"].tolist() == [4.0, 8.0, 12.0, 2.0, 4.0]
    older = {**busy, "history": hist([2.0, 3.1], seconds=50.0)}  # written before runs logged CPU seconds
    (row,) = flamebook.convergence_vs_single([single, older], "toy").to_dict(orient="records")
    assert row["clock"] == "wall" and row["speed-up (s)"] == pytest.approx(30 / 100)
    summary = flamebook.convergence_summary(flamebook.convergence_table([single, older], ["toy"], ["FLAME"])).iloc[0]
    said = flamebook.convergence_sentence("toy", "FLAME", summary)  # the busy run's wall seconds: say so
    assert "0.30x as fast as Single in wall seconds" in said and "so the epochs are the surer figure" in said
    curves = flamebook.record_curves([single, older], "toy", ["Single", "FLAME"])
    assert (curves["clock"] == "wall").all() and curves["seconds"].tolist() == [10.0, 20.0, 30.0, 50.0, 100.0]
    on_gpu = [{**r, "device": "cuda"} for r in (single, busy)]  # a GPU's host CPU time says nothing of its work
    (row,) = flamebook.convergence_vs_single(on_gpu, "toy").to_dict(orient="records")
    assert row["clock"] == "wall" and row["speed-up (s)"] == pytest.approx(30 / 100)


def test_a_run_resumed_on_another_machine_or_from_unlogged_epochs_is_not_timed_alike():
    cpu, gpu = {"name": "AMD EPYC", "cores": 2, "threads": 1}, {"name": "NVIDIA H200", "cores": 16, "threads": 16}
    single = {**rec("single", 42, [1, 2], hist([1.0, 2.0, 3.0])), "machine": cpu, "git": "aaa"}
    session = lambda epoch, machine, git: {"first_epoch": epoch, "git": git, "machine": machine}  # noqa: E731
    runs = {
        "one machine": [session(1, cpu, "aaa"), session(3, cpu, "bbb")],
        "two machines": [session(1, gpu, "aaa"), session(3, cpu, "aaa")],
        "unlogged epochs": [session(1, None, None), session(3, cpu, "bbb")],
    }
    flame = rec("flame", 42, [1, 2], hist([2.0, 3.1], seconds=5.0))
    match = {k: flamebook.machine_match({**flame, "machine": cpu, "sessions": v}, single) for k, v in runs.items()}
    assert match == {"one machine": "same", "two machines": "different", "unlogged epochs": "not recorded"}
    revisions = [flamebook.revisions({**single, "sessions": v}) for v in runs.values()] + [flamebook.revisions(single)]
    assert revisions == ["aaa, bbb", "aaa", "unlogged, bbb", "aaa"]  # no sessions: the record's own revision
    full = {"profile": "full", "epoch_budget": 200, "epochs_run": 9, "model": {"max_len": 50}}
    group = [{**single, **full, "seed": s, "sessions": v} for s, v in zip((42, 43), runs.values())]
    keys = ("NDCG@20",)
    summary = flamebook.records_summary(flamebook.records_frame(group, keys), keys).iloc[0]
    assert summary["seeds"] == [42, 43] and summary["code"] == "aaa, bbb"  # each revision once


def test_table_4_summarises_seeds_and_says_why_a_speed_up_is_missing():
    anchor = [{"origin": "pretrained", "train_seconds": 40.0}]
    single = [rec("single", s, [1, 2], hist([1.0, 2.0, 3.0], seconds=10.0), dataset=d) for d in "ab" for s in (1, 2)]
    fast = hist([2.0, 3.1], seconds=5.0)  # Single's best (3.0 after 30 s) after 10 s, in 2 epochs
    records = single + [
        rec("flame", 1, [1, 2], fast, anchor, dataset="a"),
        {**rec("flame", 2, [1, 2], fast, anchor, dataset="a"), "device": "cuda"},  # seconds of two devices
        rec("flame", 1, [1, 2], fast, [{"origin": "file"}], dataset="b"),  # released: no anchor seconds
        rec("flame", 2, [1, 2], hist([1.0]), [{"origin": "file"}], dataset="b"),  # never reaches 3.0
    ]
    names = ["FLAME", "FLAME (released anchor)"]
    conv = flamebook.convergence_table(records, ["a", "b"], names)
    assert len(conv) == 4 and set(conv["method"]) == set(names) and conv["seed"].dtype.kind == "i"
    apart = conv[(conv["dataset"] == "a") & (conv["seed"] == 2)].iloc[0]
    assert np.isnan(apart[["Single s", "method s", "anchor s"]].astype(float)).all() and apart["method epochs"] == 2
    summary = flamebook.convergence_summary(conv)
    a, b = summary.loc[("a", "FLAME")], summary.loc[("b", "FLAME (released anchor)")]
    assert a["Single s"] == 30.0 and a["speed-up (s)"] == pytest.approx(3.0)  # the same-device seed alone
    assert a["speed-up incl. anchor (s)"] == pytest.approx(30 / 50) and a["speed-up (epochs)"] == pytest.approx(1.5)
    assert (a["seeds reached"], a["seeds timed alike"], b["seeds reached"]) == ("2/2", "1/2", "1/2")
    said = flamebook.convergence_sentence("a", "FLAME", a)
    assert "in training seconds without its anchor's pretraining and 0.60x with it (1.50x in epochs)" in said
    assert "3.00x as fast as Single in training seconds" in said
    assert "the seconds come from 1 of the 2 seeds that got there, the other timed on another device" in said
    said = flamebook.convergence_sentence("b", "FLAME (released anchor)", b)
    assert "in 1/2 seeds, 1 never within its run; in the one that did, 3.00x as fast as Single" in said
    assert b["machines named"] == "0/1"  # of the seeds whose seconds make the speed-up, not of all timed alike
    assert "the release does not state" in said
    only_apart = flamebook.convergence_summary(conv[conv["device"] == "cuda"]).iloc[0]
    said = flamebook.convergence_sentence("a", "FLAME", only_apart)
    assert "their seconds ran on different devices or machines" in said
    never = flamebook.convergence_summary(conv[~conv["reached"]]).iloc[0]
    assert "no speed-up can be measured there" in flamebook.convergence_sentence("b", "FLAME", never)
    assert flamebook.convergence_table(records, ["elsewhere"], names).empty
    spread = conv.copy()
    spread.loc[(spread["dataset"] == "a") & (spread["seed"] == 2), "speed-up (epochs)"] = 3.0
    said = flamebook.convergence_sentence("a", "FLAME", flamebook.convergence_summary(spread).loc[("a", "FLAME")])
    assert "(2.25x in epochs, 1.50x to 3.00x by seed)" in said


def test_a_released_anchor_makes_its_own_row():
    r = rec("flame", 1, [0], hist([1]), [{"origin": "file", "file": "toy.pt"}])
    assert flamebook.variant(r) == "FLAME (released anchor)" and flamebook.variant(rec("flame", 1, [0], [])) == "FLAME"


def test_measured_once_per_build_and_afresh_outside_one(tmp_path, monkeypatch):
    calls = []

    def measure():
        calls.append(1)
        return {"ms": float(len(calls))}

    monkeypatch.delenv("FLAMEBOOK_BUILD", raising=False)
    assert flamebook.measured(tmp_path, "x", measure) == {"ms": 1.0}
    assert flamebook.measured(tmp_path, "x", measure) == {"ms": 2.0}  # no build: always measured
    assert not (tmp_path / "measured-x.json").exists()
    monkeypatch.setenv("FLAMEBOOK_BUILD", "b1")
    assert flamebook.measured(tmp_path, "x", measure) == {"ms": 3.0}
    assert flamebook.measured(tmp_path, "x", measure) == {"ms": 3.0}  # the build's second execution reuses it
    monkeypatch.setenv("FLAMEBOOK_BUILD", "b2")
    assert flamebook.measured(tmp_path, "x", measure) == {"ms": 4.0}  # another build measures again
    assert len(calls) == 4


def test_the_released_anchor_is_a_reference_that_single_and_flame_from_it_are_compared_with_per_user():
    rng = np.random.default_rng(1)
    anchor_ranks = rng.integers(0, 60, 400)
    lower = [anchor_ranks + 2, anchor_ranks + 1]  # Single's two seeds: every target ranked lower than the anchor's
    from_file = [{"origin": "file", "file": "toy.pt"}]
    records = [{**rec("single", s, lower[i], hist([1])), "valid": {"NDCG@20": 5.0}} for i, s in enumerate((42, 43))]
    records.append({**rec("flame", 42, anchor_ranks, hist([1]), from_file), "valid": {"NDCG@20": 6.0}})
    anchor = {
        "file": "toy.pt",
        "valid": {"NDCG@20": 7.0},
        "test": {"NDCG@20": 100 * user_ndcg(anchor_ranks).mean(), "HR@20": 100 * float((anchor_ranks < 20).mean())},
        "test_ranks": encode_ranks(anchor_ranks),
    }
    numbers = released.numbers(records, {"toy": anchor, "other": anchor})
    single, flame = numbers.loc[("toy", "Single")], numbers.loc[("toy", flamebook.RELEASED_VARIANT)]
    expected = paired_comparison(np.mean([user_ndcg(r) for r in lower], 0), user_ndcg(anchor_ranks))
    assert single["mean diff"] == pytest.approx(expected["mean_diff"]) and single["mean diff"] < 0
    assert flamebook.verdict(single) == "significantly worse than" and single["valid NDCG@20"] == 5.0
    assert flame["mean diff"] == 0 and flame["p"] == 1.0 and flamebook.verdict(flame) == "not distinguishable from"
    table = released.table(numbers)
    assert table.loc[("toy", released.ANCHOR), "seeds"] == "(the release's)"
    assert table.loc[("toy", released.ANCHOR), "p (Wilcoxon)"] == "reference"
    assert table.loc[("toy", "Single"), "seeds"] == "42, 43" and (table.loc[("other", "Single")] == "not run").all()
    said = released.sentence("toy", numbers)
    assert f"test NDCG@20 {anchor['test']['NDCG@20']:.2f} (validation 7.00)" in said
    assert "(seeds 42, 43)" in said and "significantly worse than the release's network" in said
    assert "(seed 42)" in said and "not distinguishable from the anchor it was trained from" in said
    assert released.sentence("other", numbers).endswith("FLAME (released anchor) has no full record there yet.")
    main = flamebook.main_numbers(records, ["toy", "other"], ["Single", flamebook.RELEASED_VARIANT])
    together = released.together("toy", numbers, main)
    assert "is significantly better than Single and not distinguishable from the anchor it was" in together
    assert "Single is significantly worse than that anchor" in together and "does not show against" in together
    assert released.together("other", numbers, main) == ""  # nothing compared there
    with pytest.raises(ValueError, match="400 test users and the anchor's split 300"):
        released.numbers(records, {"toy": {**anchor, "test_ranks": encode_ranks(anchor_ranks[:300])}})


def test_released_anchors_are_looked_for_and_a_missing_one_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAME_DATA_DIR", str(tmp_path / "data"))  # no dataset file there
    (tmp_path / "amazon-toys.pt").write_bytes(b"")
    found, missing = released.available(["amazon-toys", "amazon-games", "ml-100k"], tmp_path)
    assert found == [] and missing == [
        "amazon-toys: its data file is fetchable",
        "amazon-games: no file amazon-games.pt",
    ]
