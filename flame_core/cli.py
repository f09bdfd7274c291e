"""Command line: ``python -m flame_core {train,pretrain,evaluate,datasets}``.

Every field of `ModelConfig` and `TrainConfig` is an option (``--num-paths 4``, ``--no-frozen-dropout``);
its help text is the field's comment in config.py, so the two never disagree. Bad input exits with
status 2 and a one-line reason; a diverged run exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import time
import typing
from pathlib import Path


from flame_core.anchor import load_anchor, pretrain_anchor
from flame_core.config import ConfigError, ModelConfig, TrainConfig
from flame_core.data import DatasetError, available_datasets, build_split, load_dataset
from flame_core.engine import TrainingDiverged, evaluate, selected_weights, train, train_stacked
from flame_core.experiments import build, pretrained_metrics, record
from flame_core.methods import Single, build_method
from flame_core.metrics import format_table
from flame_core.utils import portable_command, resolve_device, seed_everything

EXAMPLES = """examples:
  python -m flame_core datasets
  python -m flame_core train --method flame --dataset ml-100k --epochs 30
  python -m flame_core train --method single --dataset amazon-toys      (FLAME_DATA_DIR=../shared/data)
  python -m flame_core train --method flame --dataset amazon-toys --frozen ../shared/official_weights/amazon-toys.pt
  python -m flame_core evaluate --dataset amazon-toys --weights ../shared/official_weights/amazon-toys.pt
"""


def _field_help(cls) -> dict[str, str]:
    """The trailing comment of each field in the dataclass source."""
    source = inspect.getsource(cls)
    return dict(re.findall(r"^\s+(\w+): [^=]+=[^#\n]*#\s*(.+)$", source, flags=re.M))


def _parse_optional_int(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def _parse_int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def _add_config_options(parser: argparse.ArgumentParser, cls, skip=()) -> None:
    group = parser.add_argument_group(f"{cls.__name__} (defaults: the official release)")
    helps, hints = _field_help(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag, hint = "--" + f.name.replace("_", "-"), hints[f.name]
        text = f"{helps.get(f.name, '')} (default: {f.default})"
        if hint in (bool, bool | None):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif hint == int | None:
            group.add_argument(flag, type=_parse_optional_int, default=argparse.SUPPRESS, metavar="INT|none", help=text)
        elif typing.get_origin(hint) is tuple:
            group.add_argument(flag, type=_parse_int_tuple, default=None, metavar="INT,INT,...", help=text)
        else:
            group.add_argument(flag, type=hint, default=None, help=text)


def _configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    def pick(cls):  # options left at None were not given; optional ints are present only when given
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls.from_dict({k: v for k, v in vars(args).items() if k in names and (v is not None or hints[k] == int | None)})

    return pick(ModelConfig), pick(TrainConfig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flame_core",
        description="FLAME: frozen and learnable networks with aligned modular ensemble, for sequential recommendation.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("train", help="train a method, select on validation, test once, print the results table")
    _common(p)
    p.add_argument("--frozen", metavar="PATH", help="anchor weights for flame/ensemble_guide (released or cached); "
                   "default: pretrain a Single SASRec with the same settings, cached by settings (ckd's "
                   "teachers likewise)")  # fmt: skip
    p.add_argument("--seeds", metavar="S,S,...", type=_parse_int_tuple,
                   help="train these seeds as one stacked model in one process (single, ensemble_scratch, "
                   "ensemble_guide, flame): each seed keeps its own early stopping and gets its own run "
                   "directory, results and record; replaces --seed")  # fmt: skip
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/DATASET/METHOD-seedSEED; with --seeds "
                   "runs/DATASET/METHOD-stack-SEEDS holding the stacked checkpoint and a folder seedSEED per seed)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --out already holds a run")
    p.add_argument("--record", metavar="DIR", help="also write a results record with provenance to DIR (e.g. results/)")
    p.add_argument("--profile", default="cli", help="the label stored in the record (e.g. quick, full, budget-20)")
    _add_config_options(p, TrainConfig)
    p = sub.add_parser("pretrain", help="pretrain (or find in the cache) the frozen anchor for a dataset")
    _common(p)
    method_only = ("method", "seed", "split", "path_attention", "num_paths", "rec_from", "frozen_dropout", "lambda_0",
                   "lambda_R", "anneal", "anneal_epochs", "tau", "pair_weighting", "members", "cuda_graph")  # fmt: skip
    related = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name.startswith(("emkd_", "canet_", "ckd_")))
    _add_config_options(p, TrainConfig, skip=method_only + related)
    p = sub.add_parser("evaluate", help="evaluate a run directory, or SASRec weights (released or cached anchor)")
    _common(p)
    p.add_argument("--weights", metavar="PATH", required=True,
                   help="a run directory (its selected weights), a released anchor .pt or a cached anchor")  # fmt: skip
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    sub.add_parser("datasets", help="list the datasets that are available, with their statistics")
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="ml-100k", help="a name (ml-100k, synthetic, or FILE in $FLAME_DATA_DIR) or a path")
    _add_config_options(p, ModelConfig)


def _load(args, model: ModelConfig, keep, device):
    data = load_dataset(args.dataset)
    stats = data.stats()
    print(" ".join(f"{k}={v}" for k, v in stats.items()))
    split = build_split(data, model.max_len, keep).to(device)
    print(f"training samples={split.train_inputs.shape[0]} max_len={model.max_len} device={device}")
    return data, split


def cmd_train(args) -> int:
    model, cfg = _configs(args)
    seeds = list(args.seeds) if args.seeds else [cfg.seed]
    cfg = cfg.replace(seed=seeds[0])
    device = resolve_device(cfg.device)
    stem = Path("runs") / Path(args.dataset).stem
    if len(seeds) == 1:
        stack_dir = Path(args.out or stem / f"{cfg.method}-seed{cfg.seed}")
        dirs = [stack_dir]
    else:  # the stacked checkpoint in the folder, each seed's run directory inside it
        stack_dir = Path(args.out or stem / f"{cfg.method}-stack-{'-'.join(map(str, seeds))}")
        dirs = [stack_dir / f"seed{s}" for s in seeds]
    if (stack_dir / "checkpoint.pt").exists() and not (args.resume or args.overwrite):
        raise ValueError(f"{stack_dir} already holds a run: pass --resume to continue it, --overwrite or another --out")
    seed_everything(cfg.seed)
    data, split = _load(args, model, cfg.keep, device)
    method, pretrained = build(data, split, model, cfg, args.frozen, seeds=seeds if len(seeds) > 1 else None)
    rows = {f"{name} test": metrics for name, metrics in pretrained_metrics(method, split).items()}
    for p in pretrained:
        print(f"pretrained {p['name']}: {p['file']}" + (f" (seed {p['seed']})" if "seed" in p else ""))
    where = f"run directory {stack_dir}" if len(seeds) == 1 else f"{len(seeds)} seeds stacked in {stack_dir}"
    print(f"{cfg.method}: {method.num_parameters()} parameters; {where}")
    if len(seeds) == 1:
        all_results = [train(method, split, out_dir=stack_dir, resume=args.resume)]
    else:
        all_results = train_stacked(method, split, stack_dir, dirs, resume=args.resume)
    for seed, results in zip(seeds, all_results):
        name = cfg.method if len(seeds) == 1 else f"{cfg.method} seed {seed}"
        rows[f"{name} valid (epoch {results['best_epoch']})"] = results["valid"]
        rows[f"{name} test"] = results["test"]
    runs = ", ".join(str(r["epochs_run"]) for r in all_results)
    print(f"\nfull ranking over {data.num_items} items, leave-one-out, {data.name}, seed {', '.join(map(str, seeds))}, "
          f"{runs} epochs run, selected on valid NDCG@20; metrics in percent")  # fmt: skip
    print(format_table(rows))
    for seed, results, d in zip(seeds, all_results, dirs):
        print(f"train {results['train_seconds']:.1f}s, inference {results['inference_seconds_per_1000_users']:.3f}s "
              f"per 1000 users; results in {d / 'results.json'}")  # fmt: skip
        if results["report"]:
            print(f"report (test): {json.dumps(results['report'])}")
        if args.record:
            path = record(results, data, model, cfg.replace(seed=seed), args.record, args.profile, args.command_line,
                          args.frozen, pretrained)  # fmt: skip
            print(f"record: {path}")
    return 0


def cmd_pretrain(args) -> int:
    model, cfg = _configs(args)
    device = resolve_device(cfg.device)
    cfg = cfg.replace(seed=cfg.anchor_seed)  # the anchor flame and ensemble_guide use
    seed_everything(cfg.seed)
    data, split = _load(args, model, cfg.keep, device)
    anchor, path = pretrain_anchor(data, split, model, cfg)
    probe = Single(data.num_items, model, cfg.replace(method="single")).to(device)
    probe.learn.load_state_dict(anchor.state_dict())
    print(format_table({f"anchor {s}": evaluate(probe, split, s) for s in ("valid", "test")}))
    print(f"anchor: {path}")
    return 0


def cmd_evaluate(args) -> int:
    weights = Path(args.weights)
    if weights.is_dir():  # a run directory: rebuild its method from config.json, take the selected weights
        saved = json.loads((weights / "config.json").read_text())
        model, cfg = ModelConfig.from_dict(saved["model"]), TrainConfig.from_dict(saved["train"])
        cfg = cfg.replace(device=args.device, progress=False)
        device = resolve_device(cfg.device)
        data, split = _load(args, model, cfg.keep, device)
        method = build_method(data.num_items, model, cfg).to(device)
        selected, epoch = selected_weights(weights, device)
        method.load_state_dict(selected)
        name = f"{cfg.method} (epoch {epoch})"
    else:
        model, _ = _configs(args)
        device = resolve_device(args.device)
        data, split = _load(args, model, -1, device)
        method = Single(data.num_items, model, TrainConfig(method="single")).to(device)
        method.learn.load_state_dict(load_anchor(weights, model, data.num_items).state_dict())
        name = weights.name
    t0 = time.perf_counter()
    rows = {f"{name} {s}": evaluate(method, split, s) for s in ("valid", "test")}
    print(format_table(rows))
    print(f"full ranking over {data.num_items} items, history excluded; {time.perf_counter() - t0:.2f}s for both splits")
    report = method.report(split)
    if report:
        print(f"report (test): {json.dumps(report)}")
    return 0


def cmd_datasets(args) -> int:
    for entry in available_datasets():
        if not entry["available"]:
            print(f"{entry['name']:16s} not available: {entry['source']}")
            continue
        stats = load_dataset(entry["name"]).stats()
        print(f"{entry['name']:16s} " + " ".join(f"{k}={v}" for k, v in stats.items() if k != "dataset"))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.command_line = portable_command(["python", "-m", "flame_core", *(sys.argv[1:] if argv is None else argv)])
    commands = {"train": cmd_train, "pretrain": cmd_pretrain, "evaluate": cmd_evaluate, "datasets": cmd_datasets}
    try:
        return commands[args.command](args)
    except (DatasetError, ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command with --resume to continue from the last epoch", file=sys.stderr)
        return 130

