"""Kernel-level latency prediction in the spirit of nn-Meter: one regressor per kind of block.

nn-Meter splits a model into the kernels a runtime executes (fused conv+bn+act, and so on),
predicts each kernel with a regressor trained on kernels measured alone, and sums them. Our unit is
the block of a LUT (`hwnas_deploy/lut.py`: a stem conv, an MBConv, the head; each measured alone on
the device), so this model is trained on the LUT's entries, one random forest per block kind on
the block's shape (input size, channels, kernel, stride, expansion, SE, activation) plus its MACs,
parameters and activation sizes. Unlike the LUT it predicts blocks it never measured, which a LUT
over a few hundred networks does not cover in a space of 10^19. Cell blocks describe their wiring
too: a NAS-Bench-201 cell the operation on each of its six edges, a BLOX block its scheme and how
many of each operation it runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields

import numpy as np

from hwnas_deploy.errors import PredictorError
from hwnas_deploy.spaces import blox, nb201
from hwnas_deploy.spaces.blocks import ACTIVATIONS, ConvBlock, HeadBlock, MBConvBlock

BLOCK_KINDS = {
    "conv": ConvBlock, "mbconv": MBConvBlock, "head": HeadBlock,
    "nb201cell": nb201.CellBlock, "nb201reduce": nb201.ResReduceBlock, "nb201head": nb201.NB201HeadBlock,
    "bloxcell": blox.BloxCellBlock, "bloxreduce": blox.BloxReduceBlock,
}


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


def _wiring(block) -> list[float]:
    if block.kind == "nb201cell":  # the operation of each edge, one-hot
        return [1.0 if op == o else 0.0 for op in block.op_indices for o in range(len(nb201.OPS))]
    if block.kind == "bloxcell":  # the scheme, one-hot, and the count of each operation
        d = blox.DESIGNS[block.design]
        return [1.0 if d.scheme == s else 0.0 for s in blox.SCHEMES] + [float(d.ops.count(o)) for o in blox.OPS]
    return []


def block_features(block) -> np.ndarray:
    """Numeric shape fields (booleans as 0/1), the activation one-hot (blocks that have one), the
    wiring of cell blocks, and log-scaled cost counts."""
    shape = [float(v) for k, v in sorted(asdict(block).items())
             if k not in ("kind", "act", "ops", "design") and not isinstance(v, str)]
    act = [1.0 if block.act == a else 0.0 for a in ACTIVATIONS] if hasattr(block, "act") else []
    elems = sum(i + o for i, o in block.activation_sizes())
    return np.asarray(shape + act + _wiring(block)
                      + [math.log1p(block.macs()), math.log1p(block.params()), math.log1p(elems)])


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
