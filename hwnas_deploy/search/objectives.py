"""What a search optimises and constrains: named functions of sub-network configs.

An objective is a name, a direction and a function from configs to numbers, built from a short
spec (the command line's `--objective`):

    macs | params | sram | flash              cost counts of the space (sram: int8 peak activations,
                                              flash: int8 weight bytes)
    latency=predictor:FILE                    a saved predictor (`hwnas predictor fit`), ms
    latency=lut:FILE                          a calibrated LUT (`hwnas lut build`), ms
    latency=measure:DEVICE/RUNTIME            measured on the device (`hwnas profile`'s path: export,
                                              deploy, measure, stored; what the store has is reused);
                                              plain `latency=measure` takes a recipe's device/runtime
    accuracy=predictor:FILE                   a saved accuracy predictor (maximised)
    accuracy=supernet:CKPT[@test]             a trained supernet's estimate (`hwnas train-supernet`):
                                              top-1 % on the validation (or test) split, cached in
                                              the store per (checkpoint, network)
    accuracy=table:CSV[@COLUMN]               a table of measured values (DyNAS-T's CSV format, a file
                                              or a folder of them; default column "Top-1 Acc (%)"),
                                              generalised to every network by a ridge model fitted on it

`NAME=...` names the objective; a name starting with "acc" is maximised, everything else
minimised; `max:` before a spec maximises it (`max:params`: capacity as a stand-in for accuracy).
Constraints are `NAME<=LIMIT` on objectives (or on cost counts not optimised).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hwnas_deploy.errors import ConfigError
from hwnas_deploy.spaces import SearchSpace

COUNTS = {
    "macs": lambda sp, c: float(sp.macs(c)),
    "params": lambda sp, c: float(sp.params_count(c)),
    "sram": lambda sp, c: float(sp.peak_activation_bytes(c, 1)),
    "flash": lambda sp, c: float(sp.params_count(c)),  # int8 weights: one byte each
}


@dataclass(frozen=True)
class Objective:
    name: str
    maximise: bool
    evaluate: Callable[[Sequence[dict]], np.ndarray]
    source: str  # the spec it was built from
    measured: bool = False  # evaluating it measures on a device (what tactics count as a validation)
    #: a predictor's standard deviation of each value, where it has one (a Gaussian process)
    std: Callable[[Sequence[dict]], np.ndarray | None] | None = None


def minimised(rows: Sequence[dict], objectives: Sequence[Objective]) -> np.ndarray:
    """The objectives' values of each row as pymoo minimises them (maximised ones negated)."""
    return np.asarray([[-r[o.name] if o.maximise else r[o.name] for o in objectives] for r in rows], dtype=float)


def _load_predictor(path: str):
    from hwnas_deploy.predictors import Predictor

    return Predictor.load(path)


def _load_lut(path: str):
    from hwnas_deploy.predictors.lut import LatencyLUT

    return LatencyLUT.load(path)


#: NAME=KIND:FILE objectives: what the file holds, and how it is read (each has .space and .predict)
_FILE_KINDS = {"predictor": ("predictor", _load_predictor), "lut": ("LUT", _load_lut)}


def measured(space: SearchSpace, device: str, runtime: str, store,
             lab: str | None = None) -> Callable[[Sequence[dict]], np.ndarray]:
    """Median latency (ms) of each config on the device, measured now unless the store has it
    (on every device of the profile in `lab`, when given); a network the device cannot hold, or
    whose measurement failed, is infinitely slow."""
    from hwnas_deploy.devices import load_profile
    from hwnas_deploy.profiling import profile

    prof = load_profile(device)
    prof.require_runtime(runtime)

    def evaluate(configs: Sequence[dict]) -> np.ndarray:
        report = profile(prof, space, 0, runtime, store, configs=list(configs), progress=False,
                         lab=lab).raise_if_interrupted()
        return np.asarray([report.median_ms(space.config_hash(c)) for c in configs])

    return evaluate


def _table(path: str, space: SearchSpace, name: str):
    from hwnas_deploy.predictors import Predictor, from_csv

    path, _, column = path.partition("@")
    data = from_csv(path, space.name, column or "Top-1 Acc (%)")
    return Predictor("ridge").fit(data.configs, data.y, space.name, target=name)


def parse_objective(spec: str, space: SearchSpace, store=None, device: str | None = None,
                    runtime: str | None = None, lab: str | None = None) -> Objective:
    """`store`: where measure: objectives keep their measurements (required for those);
    `device`/`runtime`: what a plain `NAME=measure` measures on (a recipe's); `lab`: the lab
    whose devices take those measurements (`hwnas lab up`), else this process."""
    text = spec.strip()
    maximise = text.startswith("max:")
    if maximise:
        text = text[4:].strip()
    name, _, how = text.partition("=")
    name = name.strip()
    if not how:
        if name not in COUNTS:
            raise ConfigError(f"objective {spec!r}: give one of {', '.join(COUNTS)} or NAME=predictor:FILE / "
                              "NAME=lut:FILE / NAME=table:CSV / NAME=supernet:CKPT / "
                              "NAME=measure:DEVICE/RUNTIME")
        fn = COUNTS[name]
        return Objective(name, maximise, lambda cs: np.asarray([fn(space, c) for c in cs]), spec)
    kind, _, path = how.partition(":")
    kind = kind.strip()
    if kind == "measure" and not path and device and runtime:
        path = f"{device}/{runtime}"
    measures = False
    if kind in _FILE_KINDS and path:
        what, load = _FILE_KINDS[kind]
        model = load(path)
        if model.space != space.name:
            raise ConfigError(f"objective {spec!r}: the {what} is for space {model.space!r}, the search for "
                              f"{space.name!r}")
        evaluate = model.predict
    elif kind == "table" and path:
        evaluate = _table(path, space, name).predict
    elif kind == "supernet" and path:
        from hwnas_deploy.supernet.objective import SupernetAccuracy

        ckpt, _, split = path.partition("@")
        evaluate = SupernetAccuracy(ckpt, store, split or "val")
        if evaluate.space != space.name:
            raise ConfigError(f"objective {spec!r}: the supernet is for space {evaluate.space!r}, the search for "
                              f"{space.name!r}")
    elif kind == "measure" and path.count("/") == 1:
        if store is None:
            raise ConfigError(f"objective {spec!r}: measurements need a store (--db)")
        device, runtime = path.split("/")
        evaluate, measures = measured(space, device, runtime, store, lab), True
    elif kind == "measure":
        raise ConfigError(f"objective {spec!r}: measure on what? Write NAME=measure:DEVICE/RUNTIME or give the "
                          "recipe a device and runtime")
    else:
        raise ConfigError(f"objective {spec!r}: expected NAME=predictor:FILE, NAME=lut:FILE, NAME=table:CSV, "
                          "NAME=supernet:CKPT or NAME=measure:DEVICE/RUNTIME")
    return Objective(name, maximise or name.lower().startswith("acc"), evaluate, spec, measures)


@dataclass(frozen=True)
class Constraint:
    name: str
    limit: float

    def violation(self, values: float | np.ndarray) -> float | np.ndarray:
        """pymoo's convention: <= 0 is feasible."""
        return values - self.limit


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*<=\s*([0-9.eE+-]+)\s*$")


def parse_constraint(spec: str) -> Constraint:
    m = _CONSTRAINT.match(spec)
    if not m:
        raise ConfigError(f"constraint {spec!r}: expected NAME<=LIMIT, e.g. latency<=50 or sram<=320000")
    try:
        return Constraint(m.group(1), float(m.group(2)))
    except ValueError:
        raise ConfigError(f"constraint {spec!r}: {m.group(2)!r} is not a number") from None
