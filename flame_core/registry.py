"""The one registry of methods: name -> class, display name, the settings it reads, a one-line summary.

The engine, the command line, the experiments and the book ask this registry and the method objects what a
method is and can do; nothing else lists method names. Classes are imported on first use, so the related
methods' modules load only when asked for.

| name               | display           | concerns (TrainConfig fields) | class                        |
| single             | Single            | -                             | methods.Single               |
| ensemble_scratch   | Ensemble-Scratch  | align, ensemble               | methods.EnsembleScratch      |
| ensemble_guide     | Ensemble-Guide    | align, flame                  | methods.Flame (one module)   |
| flame              | FLAME             | align, flame                  | methods.Flame                |
| emkd               | EMKD              | emkd                          | emkd.EMKD                    |
| canet              | CANet             | canet                         | canet.CANet                  |
| ckd                | CKD               | ckd                           | ckd.CKD                      |
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodInfo:
    name: str  # what --method takes
    display: str  # how tables and figures name it
    target: str  # "module:Class"
    concerns: tuple[str, ...]  # the TrainConfig settings it reads (its run key covers these)
    summary: str  # one line for --help
    fixed: tuple[tuple[str, object], ...] = ()  # settings the method always uses, whatever the configuration


REGISTRY: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        MethodInfo("single", "Single", "flame_core.methods:Single", (), "one SASRec, next-item cross-entropy"),
        MethodInfo(
            "ensemble_scratch",
            "Ensemble-Scratch",
            "flame_core.methods:EnsembleScratch",
            ("align", "ensemble"),
            "N SASRecs from different seeds, aligned with each other; serves the mean of their scores",
        ),
        MethodInfo(
            "ensemble_guide",
            "Ensemble-Guide",
            "flame_core.methods:Flame",
            ("align", "flame"),
            "a learnable SASRec aligned with a frozen pretrained one (FLAME with the whole network as one module)",
            fixed=(("module_split", "net"), ("path_attention", "independent"), ("num_paths", None)),
        ),
        MethodInfo(
            "flame",
            "FLAME",
            "flame_core.methods:Flame",
            ("align", "flame"),
            "frozen and learnable networks cut into modules, aligned over their 2^M modular paths",
        ),
        MethodInfo(
            "emkd",
            "EMKD",
            "flame_core.emkd:EMKD",
            ("emkd",),
            "N SASRecs with logit distillation and contrast of augmented views; serves the sum of scores",
        ),
        MethodInfo(
            "canet",
            "CANet",
            "flame_core.canet:CANet",
            ("canet",),
            "a sliced SASRec supernet whose submodel a light router picks per user",
        ),
        MethodInfo(
            "ckd",
            "CKD",
            "flame_core.ckd:CKD",
            ("ckd",),
            "a student SASRec distilled from K frozen pretrained teachers, easy samples first",
        ),
    )
}


def method_class(name: str) -> type:
    """The class of method `name` (imported on first use)."""
    module, cls = REGISTRY[name].target.split(":")
    return getattr(importlib.import_module(module), cls)


def display_name(name: str) -> str:
    """The name tables use for method `name` (its own name if it is not registered)."""
    return REGISTRY[name].display if name in REGISTRY else name
