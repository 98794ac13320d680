"""Kernel-level latency prediction in the spirit of nn-Meter: one regressor per kind of block.

nn-Meter splits a model into the kernels a runtime executes (fused conv+bn+act, and so on),
predicts each kernel with a regressor trained on kernels measured alone, and sums them. Our unit is
the block of a LUT (`hwnas_deploy/lut.py`: a stem conv, an MBConv, the head; each measured alone on
the device), so this model is trained on the LUT's entries, one random forest per block kind on
the block's shape (input size, channels, kernel, stride, expansion, SE, activation) plus its MACs,
parameters and activation sizes. Unlike the LUT it predicts blocks it never measured, which a LUT
over a few hundred networks does not cover in a space of 10^19.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields

import numpy as np

from hwnas_deploy.errors import PredictorError
from hwnas_deploy.spaces.blocks import ACTIVATIONS, ConvBlock, HeadBlock, MBConvBlock

BLOCK_KINDS = {"conv": ConvBlock, "mbconv": MBConvBlock, "head": HeadBlock}


def parse_block_key(key: str):
    """The block a LUT key (`Block.key()`) describes."""
    kind, _, body = key.partition(":")
    cls = BLOCK_KINDS.get(kind)
    if cls is None or not body:
        raise PredictorError(f"LUT key {key!r}: unknown block kind {kind!r} (known: {', '.join(BLOCK_KINDS)})")
    types = {f.name: f.type for f in fields(cls)}
    values = {}
    for item in body.split(","):
        name, _, text = item.partition("=")
        if name not in types:
            raise PredictorError(f"LUT key {key!r}: {kind} blocks have no field {name!r}")
        t = types[name]
        try:
            if t in (bool, "bool"):
                values[name] = text == "True"
            elif t in (int, "int") or (t in (float, "float") and text.lstrip("-").isdigit()):
                values[name] = int(text)  # a float field given as a whole number keeps its key: expand=3
            elif t in (float, "float"):
                values[name] = float(text)
            else:
                values[name] = text
        except ValueError:
            raise PredictorError(f"LUT key {key!r}: {name}={text!r} is not a {t}") from None
    try:
        return cls(**values)
    except TypeError as exc:
        raise PredictorError(f"LUT key {key!r}: {exc}") from None


def block_features(block) -> np.ndarray:
    """Shape fields (numbers, booleans as 0/1), the activation one-hot, and log-scaled cost counts."""
    shape = [float(v) for k, v in sorted(asdict(block).items()) if k not in ("kind", "act")]
    act = [1.0 if block.act == a else 0.0 for a in ACTIVATIONS]
    elems = sum(i + o for i, o in block.activation_sizes())
    return np.asarray(shape + act + [math.log1p(block.macs()), math.log1p(block.params()), math.log1p(elems)])


class KernelModel:
    """Per-kind random forests on log(ms) of measured blocks; `predict` sums a network's blocks."""

    def __init__(self, n_estimators: int = 200, seed: int = 0):
        self.n_estimators, self.seed = n_estimators, seed
        self._models: dict[str, object] = {}
        self._single: dict[str, float] = {}  # kinds measured once: that measurement

    def fit(self, entries: Mapping[str, float]) -> KernelModel:
        from sklearn.ensemble import RandomForestRegressor

        by_kind: dict[str, tuple[list[np.ndarray], list[float]]] = {}
        for key, ms in sorted(entries.items()):
            if ms <= 0:
                raise PredictorError(f"LUT entry {key!r}: latency {ms} ms is not positive")
            block = parse_block_key(key)
            xs, ys = by_kind.setdefault(block.kind, ([], []))
            xs.append(block_features(block))
            ys.append(math.log(ms))
        if not by_kind:
            raise PredictorError("the LUT has no entries to train a kernel-level model on")
        for kind, (xs, ys) in by_kind.items():
            if len(ys) == 1:
                self._single[kind] = math.exp(ys[0])
                continue
            model = RandomForestRegressor(n_estimators=self.n_estimators, min_samples_leaf=1, max_features=0.7,
                                          random_state=self.seed, n_jobs=1)
            self._models[kind] = model.fit(np.vstack(xs), np.asarray(ys))
        return self

    def predict_blocks(self, blocks: Sequence) -> np.ndarray:
        out = np.empty(len(blocks))
        for kind in {b.kind for b in blocks}:
            idx = [i for i, b in enumerate(blocks) if b.kind == kind]
            if kind in self._models:
                out[idx] = np.exp(self._models[kind].predict(np.vstack([block_features(blocks[i]) for i in idx])))
            elif kind in self._single:
                out[idx] = self._single[kind]
            else:
                raise PredictorError(f"the kernel-level model has no {kind!r} blocks to learn from (its LUT "
                                     "measured none)")
        return out

    def network_sums(self, space, configs: Sequence[dict]) -> np.ndarray:
        """Sum of the predicted blocks of each config (one batched prediction per kind)."""
        blocks = [space.blocks(c) for c in configs]
        flat = [b for bs in blocks for b in bs]
        per_block = self.predict_blocks(flat) if flat else np.zeros(0)
        sums, i = [], 0
        for bs in blocks:
            sums.append(math.fsum(per_block[i:i + len(bs)].tolist()))
            i += len(bs)
        return np.asarray(sums)
