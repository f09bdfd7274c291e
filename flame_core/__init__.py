"""flame_core: FLAME (Frozen and Learnable networks with Aligned Modular Ensemble) for sequential recommendation.

A small PyTorch library: a tensorized post-LN SASRec cut into modules, modular paths with prefix sharing,
the FLAME losses, the baselines the book compares against, a training engine with full-ranking metrics,
and a command line (``python -m flame_core --help``).

Axis letters used in shape comments throughout the package:

    N  networks stacked in one parameter tensor (ensemble members, stacked replicas, or 1)
    S  stacked replicas: independent copies of one method trained side by side, one per seed (1 unless stacked)
    R  rows that share one network's module call (path prefixes, or 1)
    P  paths (or path prefixes at one level)
    M  modules a network is cut into
    B  batch (training samples or users)
    X  training samples of a dataset, U users
    L  sequence length (max_len); W_k the width of a packed bucket's attention grid
    T  tokens of a batch (all B*L grid cells when padded, the real ones when packed)
    C  attention streams side by side (2 in the released code's shared attention, else 1)
    G  attention groups of one call (N*R/C)
    H  attention heads, E head size (D / H)
    D  hidden size, F feed-forward size (4D)
    I  items (score matrices have I+1 columns: column 0 is padding and scores -inf)
    W  width of a left-padded history (or of a bucket's grid inside attention)

Importing the package has no side effects: no seeding, no logging configuration, no threads.
"""

from flame_core.config import ModelConfig, TrainConfig
from flame_core.data import Interactions, Split, build_split, load_dataset

__all__ = ["ModelConfig", "TrainConfig", "Interactions", "Split", "build_split", "load_dataset"]
__version__ = "0.1.0"
