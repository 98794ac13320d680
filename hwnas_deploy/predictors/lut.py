"""Latency look-up tables: every distinct block of a space measured alone on a device.

As OFA and FBNet build theirs: a block's key holds everything that changes its cost (input size,
channels, kernel, stride, expansion, activation, squeeze-and-excitation; `Block.key()`), each
distinct block is exported and measured in isolation with the device's own runtime, and a
sub-network is predicted as the sum of its blocks. Whole networks are not the sum of their parts
(operator fusion, caches, per-inference overheads), so `calibrate` fits `a + b * sum` on a few
whole-network measurements (by default the per-inference offset `a` with b = 1); `compare`
reports how far both sit from measured networks.

The table is a JSON file (entries + calibration + SHA-256 of its content), rewritten after every
block, so an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas_deploy import datafile
from hwnas_deploy.errors import PredictorError
from hwnas_deploy.spaces import get_space

FORMAT = "hwnas-latency-lut"
VERSION = 1


@dataclass
class LatencyLUT:
    space: str
    device: str
    runtime: str
    threads: int
    batch: int
    entries: dict[str, float] = field(default_factory=dict)  # block key -> median ms
    calibration: tuple[float, float] = (0.0, 1.0)  # whole network ~ a + b * block sum

    def block_keys(self, cfg: dict) -> list[str]:
        return [b.key() for b in get_space(self.space).blocks(cfg)]

    def missing(self, configs: Sequence[dict]) -> list[str]:
        return sorted({k for c in configs for k in self.block_keys(c)} - set(self.entries))

    def block_sum(self, configs: Sequence[dict]) -> np.ndarray:
        missing = self.missing(configs)
        if missing:
            raise PredictorError(
                f"the LUT has no entry for {len(missing)} block(s), e.g. {missing[0]}; build it over these "
                "configs (`hwnas lut build ... --configs FILE`)"
            )
        return np.asarray([sum(self.entries[k] for k in self.block_keys(c)) for c in configs])

    def predict(self, configs: Sequence[dict]) -> np.ndarray:
        a, b = self.calibration
        return a + b * self.block_sum(configs)

    def calibrate(self, configs: Sequence[dict], measured_ms: Sequence[float], slope: bool = False) -> LatencyLUT:
        """Fit the whole-network term from measured networks: by default the per-inference offset
        alone (`a` = median of measured - sum, b = 1), robust with a handful of noisy networks;
        `slope=True` fits `a + b * sum` by least squares, which needs more of them (a few noisy
        points can tilt the line far off)."""
        if len(configs) < (3 if slope else 1):
            raise PredictorError(f"calibration needs at least {3 if slope else 1} measured networks, "
                                 f"got {len(configs)}")
        s, m = self.block_sum(configs), np.asarray(measured_ms, dtype=np.float64)
        if slope:
            b, a = np.polyfit(s, m, 1)
            self.calibration = (float(a), float(b))
        else:
            self.calibration = (float(np.median(m - s)), 1.0)
        return self

    # -- file -----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "space": self.space, "device": self.device,
            "runtime": self.runtime, "threads": self.threads, "batch": self.batch,
            "entries": dict(sorted(self.entries.items())), "calibration": list(self.calibration),
        }

    def save(self, path: str | Path) -> Path:
        return datafile.write(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyLUT:
        return cls.from_dict(datafile.read(path, FORMAT, VERSION, "LUT"), str(path))

    @classmethod
    def from_dict(cls, data: dict, where: str = "LUT") -> LatencyLUT:
        try:
            return cls(data["space"], data["device"], data["runtime"], int(data["threads"]), int(data["batch"]),
                       {k: float(v) for k, v in data["entries"].items()}, tuple(data["calibration"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PredictorError(f"{where}: malformed LUT ({exc!r})") from None


class _BlockModel:
    """Builds one block with seeded random weights and its example input (picklable, for a lab)."""

    def __init__(self, block, seed: int):
        self.block, self.seed = block, seed

    def __call__(self):
        import torch

        from hwnas_deploy.spaces.blocks import init_weights

        torch.manual_seed(self.seed)
        model = self.block.build().eval()
        init_weights(model)
        b = self.block
        return model, torch.randn(1, b.cin, b.in_hw, b.in_hw)


def block_networks(space: str, configs: Sequence[dict]) -> dict[str, object]:
    """{block key: a measurable network of that block alone} over the blocks of `configs`."""
    from hwnas_deploy.measurement import ModuleNetwork

    sp = get_space(space)
    out: dict[str, object] = {}
    for cfg in configs:
        for b in sp.blocks(cfg):
            key = b.key()
            if key not in out:
                seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
                out[key] = ModuleNetwork(f"{sp.name}-block", {"block": key}, _BlockModel(b, seed))
    return out


def build_lut(
    device: str,
    space: str,
    runtime: str,
    configs: Sequence[dict],
    path: str | Path,
    *,
    threads: int | None = None,
    batch: int | None = None,
    store=None,
    rounds: int = 1,
    weights: str = "generated",
    progress: bool = True,
    on_block: Callable[[str, float], None] | None = None,
    sentinel_every_s: float | None = None,
    correct_drift: bool = False,
) -> LatencyLUT:
    """Measure every block of `configs` not yet in the table at `path` (created if absent),
    through the measurement layer; the table is saved after every measurement.

    With a `store` the blocks' measurements are recorded there too (as networks of the space
    `<space>-block`, keyed by their content) and what it already holds is not measured again;
    `rounds` > 1 measures every block that many times, round after round, and keeps the median
    (slow drifts of the host then fall on all blocks alike). `on_block(key, ms)` is called for every
    measurement taken now. `weights`: as `Measurer.measure` ("generated": an MCU board makes the
    weights up). The space's sentinel network is measured every `sentinel_every_s` seconds (the
    device kind's default), its reading stored beside each block's measurement (`measurement.drift`);
    `correct_drift` scales each block measured now by the sentinel's median reading in this run over
    the reading beside it (blocks measured before stay as they are)."""
    from hwnas_deploy.measurement import Measurer
    from hwnas_deploy.measurement.drift import sentinel_for

    sp = get_space(space)
    artifacts = None if store is not None else tempfile.mkdtemp(prefix="hwnas-lut-")
    try:
        with Measurer(device, store, artifacts_dir=artifacts, progress=progress) as m:
            plan = m.plan(runtime, threads, batch, weights, sentinel_for(sp), sentinel_every_s)
            if correct_drift and plan.sentinel_every_s <= 0:
                raise PredictorError(f"--correct-drift: {plan.device.name} reads no drift sentinel (its "
                                     "measurement.sentinel_every_s is 0): give --sentinel-every SECONDS")
            path = Path(path)
            if path.exists():
                lut = LatencyLUT.load(path)
                if (lut.space, lut.device, lut.runtime, lut.threads, lut.batch) != (
                        sp.name, plan.device.name, runtime, plan.threads, plan.batch):
                    raise PredictorError(f"{path} is the LUT of {lut.space} on {lut.device}/{lut.runtime} "
                                         f"({lut.threads}t, b{lut.batch}); choose another --out for {sp.name} "
                                         f"on {plan.device.name}/{runtime}")
            else:
                lut = LatencyLUT(sp.name, plan.device.name, runtime, plan.threads, plan.batch)
            blocks = block_networks(sp.name, configs)
            keys = {net.config_hash: key for key, net in blocks.items()}
            todo = [net for key, net in blocks.items() if key not in lut.entries]
            if not todo:
                return lut
            taken: dict[str, list[tuple[float, float | None]]] = {}  # (ms, the sentinel's reading beside it)

            def measured(net, summary: dict) -> None:
                key = keys[net.config_hash]
                reading = (summary["details"].get("drift") or {}).get("ms")
                taken.setdefault(key, []).append((summary["median_ms"], reading))
                lut.entries[key] = float(np.median([ms for ms, _ in taken[key]]))
                lut.save(path)
                if on_block is not None:
                    on_block(key, summary["median_ms"])

            report = m.measure(todo, runtime, threads=plan.threads, batch=plan.batch, rounds=rounds,
                               weights=weights, on_measured=measured, sentinel=sentinel_for(sp),
                               sentinel_every_s=sentinel_every_s)
    finally:
        if artifacts is not None:
            shutil.rmtree(artifacts, ignore_errors=True)
    for net in todo:  # the median over every round, stored ones included
        result = report.results[net.config_hash]
        if result.rounds_ms and result.status in ("measured", "stored"):
            lut.entries[keys[net.config_hash]] = result.median_ms
    if correct_drift:
        all_readings = [ms for per in report.sentinel.values() for ms in per]
        if not all_readings:
            raise PredictorError("--correct-drift: the sentinel could not be measured in this run, so no block "
                                 "was corrected (the run's notes say why)")
        ref = float(np.median(all_readings))
        for key, values in taken.items():
            corrected = [ms * ref / reading for ms, reading in values if reading]
            if corrected:
                lut.entries[key] = float(np.median(corrected))
    lut.save(path)
    problems = {**report.failed, **report.unfit}
    if problems:
        h, why = next(iter(problems.items()))
        raise PredictorError(f"block {keys[h]}: {why} ({len(problems)} of {len(todo)} blocks not measured; the "
                             f"{len(lut.entries)} measured are in {path})")
    if report.interrupted:
        raise KeyboardInterrupt
    return lut


def compare(lut: LatencyLUT, configs: Sequence[dict], measured_ms: Sequence[float]) -> dict[str, dict[str, float]]:
    """How far the raw block sums and the calibrated predictions sit from measured networks."""
    from hwnas_deploy.predictors.evaluation import metrics

    raw = lut.block_sum(configs)
    return {"block_sum": metrics(measured_ms, raw), "calibrated": metrics(measured_ms, lut.predict(configs)),
            "mean_sum_over_measured": {"ratio": float(np.mean(raw / np.asarray(measured_ms)))}}


def calibrate_and_compare(lut: LatencyLUT, store, n_calibrate: int = 10, *, slope: bool = False,
                          seed: int = 0, correct_drift: bool = False) -> dict:
    """Calibrate `lut` on `n_calibrate` of the store's whole-network measurements on its device and
    runtime (drawn from `seed`) and `compare` on the others; the report also says how many of each.
    `correct_drift`: the networks' latencies corrected by their sentinel readings (`from_store`)."""
    from hwnas_deploy.predictors.data import from_store

    data = from_store(store, lut.device, lut.space, lut.runtime, lut.threads, lut.batch, correct_drift=correct_drift)
    keep = [i for i, c in enumerate(data.configs) if not lut.missing([c])]
    if len(keep) < n_calibrate + 3:
        raise PredictorError(f"only {len(keep)} measured networks are fully covered by the LUT; need "
                             f"{n_calibrate + 3} (build it over the measured configs with --configs)")
    order = np.random.default_rng(seed).permutation(keep)
    cal, test = data.subset(order[:n_calibrate]), data.subset(order[n_calibrate:])
    lut.calibrate(cal.configs, cal.y, slope=slope)
    return {**compare(lut, test.configs, test.y), "calibrated_on": len(cal), "compared_on": len(test)}
