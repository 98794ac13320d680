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

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas_deploy import datafile
from hwnas_deploy.errors import HwnasError, PredictorError
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


def build_lut(
    device: str,
    space: str,
    runtime: str,
    configs: Sequence[dict],
    path: str | Path,
    *,
    threads: int | None = None,
    batch: int | None = None,
    progress: bool = True,
    on_block: Callable[[str, float], None] | None = None,
) -> LatencyLUT:
    """Measure every block of `configs` not yet in the table at `path` (created if absent)."""
    import torch
    from tqdm import tqdm

    from hwnas_deploy.devices import driver_for, load_profile
    from hwnas_deploy.export import export_model
    from hwnas_deploy.runtimes import runtime_info
    from hwnas_deploy.spaces.blocks import init_weights

    prof = load_profile(device)
    sp = get_space(space)
    info = runtime_info(runtime)
    prof.require_runtime(runtime)
    threads, batch = threads or prof.threads, batch or prof.batch
    path = Path(path)
    if path.exists():
        lut = LatencyLUT.load(path)
        if (lut.space, lut.device, lut.runtime, lut.threads, lut.batch) != (sp.name, prof.name, runtime, threads, batch):
            raise PredictorError(f"{path} is the LUT of {lut.space} on {lut.device}/{lut.runtime} ({lut.threads}t, "
                                 f"b{lut.batch}); choose another --out for {sp.name} on {prof.name}/{runtime}")
    else:
        lut = LatencyLUT(sp.name, prof.name, runtime, threads, batch)
    blocks = {}
    for cfg in configs:
        for b in sp.blocks(cfg):
            blocks.setdefault(b.key(), b)
    todo = [(k, b) for k, b in blocks.items() if k not in lut.entries]
    if not todo:
        return lut
    driver = driver_for(prof)
    driver.open()
    bar = tqdm(total=len(blocks), initial=len(blocks) - len(todo), disable=not progress, unit="block",
               desc=f"LUT {prof.name}")
    try:
        with tempfile.TemporaryDirectory(prefix="hwnas-lut-") as tmp:
            for n, (key, block) in enumerate(todo):
                torch.manual_seed(n)
                model = block.build().eval()
                init_weights(model)
                example = torch.randn(batch, block.cin, block.in_hw, block.in_hw)
                try:
                    art = export_model(model, example, info.format, Path(tmp) / f"block{n}{_suffix(info.format)}",
                                       space=sp.name)
                    summary = driver.measure(driver.deploy(art, threads), prof.settings)
                except HwnasError as exc:
                    raise PredictorError(f"block {key}: {exc}") from None
                lut.entries[key] = summary.median_ms
                lut.save(path)
                if on_block is not None:
                    on_block(key, summary.median_ms)
                bar.update(1)
    finally:
        bar.close()
        driver.close()
    return lut


def _suffix(fmt: str) -> str:
    from hwnas_deploy.export import FORMATS

    return FORMATS[fmt]


def compare(lut: LatencyLUT, configs: Sequence[dict], measured_ms: Sequence[float]) -> dict[str, dict[str, float]]:
    """How far the raw block sums and the calibrated predictions sit from measured networks."""
    from hwnas_deploy.predictors.evaluation import metrics

    raw = lut.block_sum(configs)
    return {"block_sum": metrics(measured_ms, raw), "calibrated": metrics(measured_ms, lut.predict(configs)),
            "mean_sum_over_measured": {"ratio": float(np.mean(raw / np.asarray(measured_ms)))}}
