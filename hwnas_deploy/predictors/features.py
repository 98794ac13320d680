"""Feature vectors of sub-network configs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hwnas_deploy.errors import UnknownNameError
from hwnas_deploy.spaces import get_space

FEATURE_SETS = {
    "onehot": "one-hot choice of every used gene (unused genes all zero)",
    "onehot+macs": "one-hot genes plus MACs (1e8) and parameters (1e6)",
    "macs": "MACs alone (1e8)",
    "costs": "MACs (1e8) and output activation elements (1e6): per-MAC and per-output work",
}


def featurize(space: str, configs: Sequence[dict], features: str) -> np.ndarray:
    if features not in FEATURE_SETS:
        raise UnknownNameError("feature set", features, FEATURE_SETS)
    sp = get_space(space)
    rows = []
    for cfg in configs:
        parts = []
        if features.startswith("onehot"):
            parts.append(sp.encode(cfg))
        if "macs" in features:
            parts.append(np.asarray([sp.macs(cfg) / 1e8], dtype=np.float64))
        if features == "onehot+macs":
            parts.append(np.asarray([sp.params_count(cfg) / 1e6], dtype=np.float64))
        if features == "costs":
            outputs = sum(o for b in sp.blocks(cfg) for _, o in b.activation_sizes())
            parts.append(np.asarray([sp.macs(cfg) / 1e8, outputs / 1e6], dtype=np.float64))
        rows.append(np.concatenate(parts).astype(np.float64))
    return np.vstack(rows) if rows else np.zeros((0, 0))
