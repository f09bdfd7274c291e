"""Command line: ``python -m flame_core {train,pretrain,evaluate,datasets,sweep}``, a thin layer over `experiments`.

Every field of `ModelConfig`, of the protocol in `TrainConfig` and of each concern's settings is an option
(``--num-paths 4``, ``--no-frozen-dropout``); its help text is the field's comment in config.py, so the two
never disagree, and an option that the chosen method does not read is refused. Bad input exits with status 2
and a one-line reason; a diverged run exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import shutil
import sys
import time
import typing
from pathlib import Path

from flame_core import release, sweep
from flame_core.anchor import pretrain_anchor
from flame_core.config import CHOICES, CONCERNS, SETTING_OWNER, ModelConfig, TrainConfig
from flame_core.data import DatasetError, available_datasets, load_dataset
from flame_core.engine import TrainingDiverged, evaluate, load_weights, selected_weights
from flame_core.experiments import evaluate_network, load, pretrained_metrics, record, run_seeds
from flame_core.files import CHECKPOINT, read_json, require
from flame_core.methods import build_method
from flame_core.metrics import format_table
from flame_core.registry import REGISTRY, method_class
from flame_core.utils import git_revision, portable_command, resolve_device

DATASETS_HELP = f"""The data folder is $FLAME_DATA_DIR when set, else CACHE/data (CACHE: $FLAME_CACHE_DIR or
~/.cache/flame_core). A dataset NAME is NAME.txt there ('user item item ...' per line); ml-100k comes with the
recbole package and synthetic is generated.

fetch downloads the preprocessed datasets of the official FLAME release (Kim et al., SIGIR 2026,
arXiv:2604.04038) from the public repository {release.REPOSITORY} at commit {release.COMMIT[:12]}, checks each
file's SHA-256 against the one recorded in flame_core and stores it in the data folder.

examples:
  python -m flame_core datasets
  python -m flame_core datasets fetch amazon-toys
  python -m flame_core datasets fetch all
"""
EXAMPLES = """examples:
  python -m flame_core datasets
  python -m flame_core train --method flame --dataset ml-100k --epochs 30
  python -m flame_core train --method single --dataset amazon-toys      (FLAME_DATA_DIR=../shared/data)
  python -m flame_core train --method flame --dataset amazon-toys --seeds 42,43,44 --device cuda
  python -m flame_core train --method flame --dataset amazon-toys --frozen ../shared/official_weights/amazon-toys.pt
  python -m flame_core evaluate --dataset amazon-toys --weights ../shared/official_weights/amazon-toys.pt
"""
PROTOCOL = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in CONCERNS)


def _field_help(cls) -> dict[str, str]:
    """The trailing comment of each field in the dataclass source."""
    source = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+): [^=]+=[^#\n]*#\s*(.+)$", source, flags=re.M))


def _parse_optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _parse_int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _shown(value, hint=None) -> str:
    """A default as a user types it on the command line (an unset switch: 'unset')."""
    if value is None:
        return "unset" if hint == bool | None else "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _typed(text: str, flag: str) -> str:
    """A field's comment in the words of the command line: none, --no-FLAG, instead of Python's None, False."""
    return re.sub(r"\bFalse\b", "--no-" + flag[2:], re.sub(r"\bNone\b", "none", text))


def _add_options(parser: argparse.ArgumentParser, title: str, cls, names: tuple[str, ...] | None = None) -> None:
    """An option per field of `cls` (or of `names`); options not given stay out of the namespace."""
    group = parser.add_argument_group(title)
    helps, hints = _field_help(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if (names is not None and f.name not in names) or f.name in CONCERNS:
            continue
        flag, hint = "--" + f.name.replace("_", "-"), hints[f.name]
        text = "one of the methods listed above" if f.name == "method" else _typed(helps.get(f.name, ""), flag)
        kwargs = {"default": argparse.SUPPRESS, "help": f"{text} (default: {_shown(f.default, hint)})"}
        if hint in (bool, bool | None):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif hint == int | None:
            group.add_argument(flag, type=_parse_optional_int, metavar="INT|none", **kwargs)
        elif typing.get_origin(hint) is tuple:
            group.add_argument(flag, type=_parse_int_tuple, metavar="INT,INT,...", **kwargs)
        elif f.name == "method":
            group.add_argument(flag, choices=list(REGISTRY), metavar="{" + ",".join(REGISTRY) + "}", **kwargs)
        elif f.name in CHOICES:
            group.add_argument(flag, choices=CHOICES[f.name], **kwargs)
        else:
            group.add_argument(
                flag, type=hint, metavar=f.name.upper() if hint is str else hint.__name__.upper(), **kwargs
            )


def _configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The configurations of the options given; a method setting that the chosen method does not read is named
    on stderr (it changes nothing)."""
    given = vars(args)
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    model = ModelConfig.from_dict({k: v for k, v in given.items() if k in model_keys})
    cfg = TrainConfig.from_dict({k: v for k, v in given.items() if k in PROTOCOL or k in SETTING_OWNER})
    reads = REGISTRY[cfg.method].concerns if args.command == "train" else ("flame",)
    for key in (k for k in given if k in SETTING_OWNER and SETTING_OWNER[k] not in reads):
        users = [m for m, info in REGISTRY.items() if SETTING_OWNER[key] in info.concerns]
        print(
            f"note: --{key.replace('_', '-')} is a setting of {', '.join(users)}; --method {cfg.method} does not "
            "read it",
            file=sys.stderr,
        )
    return model, cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flame_core",
        description="FLAME: frozen and learnable networks with aligned modular ensemble, for sequential "
        "recommendation.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    methods = "\n".join(f"  {name:17s} {info.summary}" for name, info in REGISTRY.items())
    p = sub.add_parser(
        "train",
        help="train a method, select on validation, test once, print the results table",
        description=f"methods (--method):\n{methods}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p)
    p.add_argument(
        "--seeds",
        metavar="S,S,...",
        type=_parse_int_tuple,
        help="train these seeds (replaces --seed): stacked in one model for single, ensemble_scratch, "
        "ensemble_guide and flame, each with its own early stopping, run directory and record",
    )
    p.add_argument(
        "--frozen",
        metavar="PATH",
        help="anchor weights for flame/ensemble_guide (released or cached); "
        "default: pretrain a Single SASRec with the same settings and --anchor-seed, cached by settings "
        "(ckd's teachers likewise)",
    )
    p.add_argument(
        "--runs",
        metavar="DIR",
        default="runs",
        help="where runs live: DIR/DATASET/METHOD-seedSEED-KEY, "
        "KEY naming the data and settings; a finished run with the same key is reused, an interrupted one "
        "resumed (default: runs)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="an explicit run directory instead (with several seeds: the stacked "
        "checkpoint's folder, each seed in DIR/seedSEED)",
    )
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out already holds a run")
    p.add_argument("--record", metavar="DIR", help="also write a results record with provenance to DIR (e.g. results/)")
    p.add_argument("--profile", default="cli", help="the label stored in the record (e.g. quick, full, budget-20)")
    _add_options(p, "protocol and optimiser (defaults: the official release)", TrainConfig)
    for concern, cls in CONCERNS.items():
        users = ", ".join(m for m, info in REGISTRY.items() if concern in info.concerns)
        _add_options(p, f"{cls.__doc__.splitlines()[0].rstrip('.')} ({users})", cls)
    p = sub.add_parser("pretrain", help="pretrain (or find in the cache) the frozen anchor for a dataset")
    _common(p)
    _add_options(
        p,
        "protocol and optimiser (defaults: the official release)",
        TrainConfig,
        tuple(n for n in PROTOCOL if n not in ("method", "seed")),
    )
    _add_options(p, "the anchor", CONCERNS["flame"], ("anchor_seed",))
    p = sub.add_parser("evaluate", help="evaluate a run directory, or SASRec weights (released or cached anchor)")
    _common(p)
    p.add_argument(
        "--weights",
        metavar="PATH",
        required=True,
        help="a run directory (its selected weights), a released anchor .pt or a cached anchor",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    p = sub.add_parser(
        "datasets",
        help="list the datasets with their state, or fetch the release's",
        description=DATASETS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", choices=["list", "fetch"], default="list", help="list (default) or fetch")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"with fetch: {', '.join(release.RELEASED)} or all")
    p.add_argument(
        "--url",
        metavar="URL",
        help=f"fetch from this base URL (a mirror holding datasets/NAME.txt) "
        f"instead of the release's (${release.URL_VARIABLE}, else {release.BASE_URL})",
    )
    p = sub.add_parser(
        "sweep",
        help="run a grid of datasets x methods x seeds under a profile, a record per run",
        description=sweep.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--profile",
        default="full",
        help="protocol settings: full (the paper's: 200 epochs, patience 30, max_len 50) or quick (default: full)",
    )
    p.add_argument("--datasets", required=True, help="comma-separated names (ml-100k, or files in $FLAME_DATA_DIR)")
    p.add_argument(
        "--methods",
        default="single,ensemble_scratch,ensemble_guide,flame",
        help="comma-separated methods (default: the four of the book's main table)",
    )
    p.add_argument("--seeds", type=_parse_int_tuple, default=(42, 43, 44), metavar="S,S,...", help="default: 42,43,44")
    p.add_argument(
        "--released",
        metavar="DIR",
        help="also train FLAME from the released anchor DIR/DATASET.pt of "
        "each dataset that has one (e.g. ../shared/official_weights)",
    )
    p.add_argument(
        "--released-only",
        action="store_true",
        help="run only the jobs --released adds: FLAME from each released anchor, not the grid's other jobs",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    p.add_argument(
        "--stack",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train a job's seeds as one stacked model (default: on a GPU only; on a CPU it does not pay)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the profile (any option's name, e.g. --set epochs=20); repeatable",
    )
    p.add_argument("--runs", default="runs", help="run folders (default: runs)")
    p.add_argument("--record", default="results", metavar="DIR", help="records (default: results)")
    p.add_argument(
        "--executor",
        choices=["local", "slurm", "debug"],
        default="local",
        help="submitit's local executor, a Slurm array, or this process (default: local)",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="jobs at a time (default: 1); on a CPU each then gets cores/N threads unless OMP_NUM_THREADS is set",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the jobs, what is recorded and where each unrecorded seed stands (not started, or the epoch "
        "it resumes after), run nothing",
    )
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        default="ml-100k",
        help="a name that `python -m flame_core datasets` lists (ml-100k, synthetic, the release's "
        "amazon-beauty, amazon-toys, amazon-sports, amazon-games, yelp once fetched, or NAME for "
        "NAME.txt in the data folder) or a path to a 'user item item ...' file (default: ml-100k)",
    )
    _add_options(p, "the SASRec backbone (defaults: the official release)", ModelConfig)


def _load(args, model: ModelConfig, keep: int | None, device):
    data, split = load(args.dataset, model.max_len, keep)
    print(" ".join(f"{k}={v}" for k, v in data.stats().items()))
    print(f"training samples={split.train_inputs.shape[0]} max_len={model.max_len} device={device}")
    return data, split.to(device)


def cmd_train(args) -> int:
    model, cfg = _configs(args)
    seeds = list(args.seeds) if args.seeds else [cfg.seed]
    cfg = cfg.replace(seed=seeds[0])
    device = resolve_device(cfg.device)
    out = Path(args.out) if args.out else None
    if out and ((out / "checkpoint.pt").exists() or any(out.glob("seed*/checkpoint.pt"))):
        if args.overwrite:
            shutil.rmtree(out)
        elif not args.resume:
            raise ValueError(
                f"{args.out} already holds a run: pass --resume to continue it, --overwrite or another --out"
            )
    data, split = _load(args, model, cfg.keep, device)
    if len(seeds) > 1:
        how = "stacked in one model" if method_class(cfg.method).stackable else "one after another"
        print(f"{cfg.method}: {len(seeds)} seeds {how} ({', '.join(map(str, seeds))})")
    runs = run_seeds(args.dataset, model, cfg, seeds, root=args.runs, frozen=args.frozen, out=args.out)
    rows = {f"{name} test": metrics for name, metrics in pretrained_metrics(runs[0].method, split).items()}
    params = runs[0].results["parameters"]
    frozen = f" and {params['frozen']:,} frozen" if params["frozen"] else ""
    print(f"{cfg.method}: {params['trainable']:,} trainable{frozen} parameters")
    for p in runs[0].pretrained:
        print(f"pretrained {p['name']}: {p['file']}" + (f" (seed {p['seed']})" if "seed" in p else ""))
    for run in runs:
        name = cfg.method if len(seeds) == 1 else f"{cfg.method} seed {run.results['seed']}"
        rows[f"{name} valid (epoch {run.results['best_epoch']})"] = run.results["valid"]
        rows[f"{name} test"] = run.results["test"]
    epochs = ", ".join(str(run.results["epochs_run"]) for run in runs)
    plural = "s" if len(runs) > 1 or runs[0].results["epochs_run"] != 1 else ""
    print(
        f"\nfull ranking over {data.num_items} items, leave-one-out, {data.name}, seed {', '.join(map(str, seeds))}, "
        f"{epochs} epoch{plural} run, selected on valid NDCG@20; metrics in percent"
    )
    print(format_table(rows))
    for run in runs:
        results = run.results
        reused = "reused, " if run.reused else ""
        infer = results["inference_seconds_per_1000_users"]
        print(
            f"{reused}train {results['train_seconds']:.1f}s, inference {infer:.3f}s per 1000 users; "
            f"results in {run.out_dir / 'results.json'}"
        )
        if results["report"]:
            print(f"report (test): {json.dumps(results['report'])}")
        if args.record:
            path = record(
                results,
                data,
                model,
                cfg.replace(seed=results["seed"]),
                root=args.record,
                profile=args.profile,
                command=args.command_line,
                frozen=args.frozen,
                pretrained=run.pretrained,
            )
            print(f"record: {path}")
    return 0


def cmd_pretrain(args) -> int:
    model, cfg = _configs(args)
    cfg = cfg.replace(method="single", seed=cfg.flame.anchor_seed)  # the anchor flame and ensemble_guide use
    device = resolve_device(cfg.device)
    data, split = _load(args, model, cfg.keep, device)
    anchor, path = pretrain_anchor(data, split, model, cfg)
    print(format_table({f"anchor {s}": evaluate_network(anchor, model, split, s) for s in ("valid", "test")}))
    print(f"anchor: {path}")
    return 0


def cmd_evaluate(args) -> int:
    weights = Path(args.weights)
    if weights.is_dir():  # a run directory: rebuild its method from config.json, take the selected weights
        what = "a run's configuration (config.json of a run directory)"
        saved = read_json(weights / "config.json", what)
        require(saved, ("model", "train"), weights / "config.json", what)
        model, cfg = ModelConfig.from_dict(saved["model"]), TrainConfig.from_dict(saved["train"], legacy=True)
        cfg = cfg.replace(device=args.device, progress=False)
        device = resolve_device(cfg.device)
        data, split = _load(args, model, cfg.keep, device)
        method = build_method(data.num_items, model, cfg).to(device)
        selected, epoch = selected_weights(weights, device)
        load_weights(method, selected, weights / CHECKPOINT)
        t0 = time.perf_counter()
        rows = {f"{cfg.method} (epoch {epoch}) {s}": evaluate(method, split, s) for s in ("valid", "test")}
    else:
        model, _ = _configs(args)
        device = resolve_device(args.device)
        data, split = _load(args, model, -1, device)
        t0 = time.perf_counter()
        rows = {f"{weights.name} {s}": evaluate_network(weights, model, split, s) for s in ("valid", "test")}
        method = None
    print(format_table(rows))
    seconds = time.perf_counter() - t0
    print(f"full ranking over {data.num_items} items, history excluded; {seconds:.2f}s for both splits")
    report = method.report(split) if method is not None else {}
    if report:
        print(f"report (test): {json.dumps(report)}")
    return 0


def cmd_sweep(args) -> int:
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.replace("-", "_")] = value
    jobs = sweep.plan(
        args.datasets.split(","),
        args.methods.split(","),
        list(args.seeds),
        args.profile,
        overrides=overrides,
        released_dir=args.released,
        released_only=args.released_only,
        device=args.device,
        stack=args.stack,
        runs=args.runs,
        records=args.record,
    )
    for job in jobs:
        job.configs()  # bad settings fail here, before anything runs
    if args.dry_run:
        for job in jobs:
            done = sorted(sweep.recorded_seeds(job) & set(job.seeds))
            print(f"{job.name}: {'recorded ' + str(done) if done else 'to run'}; {job.command()}")
            for seed, state in sweep.progress(job).items():
                print(f"  seed {seed}: {state}")
        return 0
    rows = sweep.sweep(jobs, args.executor, args.parallel, Path(args.runs) / "sweep-logs")
    print(sweep.table(rows))
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def cmd_datasets(args) -> int:
    folder, how = release.data_folder()
    if args.action == "list" and args.names:
        raise ValueError(
            f"datasets: list takes no names (got {' '.join(args.names)}); to download: datasets fetch NAME"
        )
    if args.action == "fetch":
        if not args.names:
            raise ValueError(f"datasets fetch: name the datasets ({', '.join(release.RELEASED)}) or all")
        names = list(release.RELEASED) if args.names == ["all"] else args.names
        for name in names:
            release.fetch(name, folder, args.url)
        return 0
    print(f"data folder: {folder} ({how})")
    if not folder.is_dir():
        missing = "FLAME_DATA_DIR names a folder that does not exist" if how == "FLAME_DATA_DIR" else "not created yet"
        print(
            f"  {missing}: `python -m flame_core datasets fetch NAME` creates it and stores the release's files there"
        )
    rows = []
    for entry in available_datasets():
        if entry["users"] is None:  # a file of the data folder the library does not know: read it
            try:
                entry |= load_dataset(entry["source"]).stats()
            except DatasetError as err:
                entry |= {"state": "unreadable", "source": str(err)}
        counts = [str(entry[k]) if entry.get(k) is not None else "-" for k in ("users", "items", "interactions")]
        rows.append([entry["name"], entry["state"], *counts, entry["source"]])
    header = ["name", "state", "users", "items", "interactions", "source"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("  ".join([*cells, row[5]]))
    return 0


def main(argv: list[str] | None = None) -> int:
    git_revision()  # this process's code, read now: runs and records name it even if commits land meanwhile
    args = build_parser().parse_args(argv)
    args.command_line = portable_command(["python", "-m", "flame_core", *(sys.argv[1:] if argv is None else argv)])
    commands = {
        "train": cmd_train,
        "pretrain": cmd_pretrain,
        "evaluate": cmd_evaluate,
        "datasets": cmd_datasets,
        "sweep": cmd_sweep,
    }
    try:
        return commands[args.command](args)
    except (ValueError, OSError) as err:  # bad input (DatasetError, ConfigError, FileError, FetchError...)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: rerun the same command (with --resume when you gave --out) to continue from the last epoch",
            file=sys.stderr,
        )
        return 130
