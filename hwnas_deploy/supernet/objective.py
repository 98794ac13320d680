"""Sub-network accuracy from a trained supernet, for the search engine, cached in the store.

    acc = SupernetAccuracy("runs/supernet.pt", store)     # the objective `accuracy=supernet:FILE`
    acc([cfg1, cfg2])  -> array of top-1 accuracy in % on the dataset's validation split

Each value is computed once per (checkpoint content, sub-network, split): the store keeps it as
a score with source `supernet:<sha256 of the checkpoint>`, so a later search, another process or
another host sharing the store reuses it, and a retrained checkpoint never reuses old numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hwnas_deploy.errors import ConfigError


class SupernetAccuracy:
    def __init__(self, checkpoint: str | Path, store=None, split: str = "val", calib_images: int = 256,
                 device: str = "cpu"):
        from hwnas_deploy.artifact import sha256_file

        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise ConfigError(f"supernet checkpoint {self.checkpoint} not found (train one: hwnas train-supernet)")
        if split not in ("val", "test"):
            raise ConfigError(f"supernet accuracy split {split!r}: use val or test")
        self.sha256 = sha256_file(self.checkpoint)
        self.source = f"supernet:{self.sha256}"
        self.metric = f"{split}_accuracy"
        self.store, self.split, self.calib_images, self.device = store, split, calib_images, device
        self._memory: dict[str, float] = {}
        self._loaded = None
        from hwnas_deploy.supernet.train import load_checkpoint

        self._checkpoint = load_checkpoint(self.checkpoint)  # read once: the network is built from it when needed
        self.space = self._checkpoint["settings"]["space"]
        self.dataset_name = self._checkpoint["settings"]["dataset"]

    def _model(self):
        if self._loaded is None:
            from hwnas_deploy.supernet.data import load_dataset
            from hwnas_deploy.supernet.train import supernet_from_checkpoint

            supernet, meta = supernet_from_checkpoint(self._checkpoint)
            self._checkpoint = None
            data = load_dataset(self.dataset_name)
            if data.describe() != meta["dataset"]:
                raise ConfigError(f"{self.checkpoint} was trained on {meta['dataset']}, but {self.dataset_name!r} "
                                  f"now gives {data.describe()}")
            self._loaded = (supernet, data)
        return self._loaded

    def __call__(self, configs: Sequence[dict]) -> np.ndarray:
        from hwnas_deploy.spaces import get_space
        from hwnas_deploy.supernet.train import evaluate

        space = get_space(self.space)
        out = []
        for cfg in configs:
            cfg = space.canonical(cfg)
            h = space.config_hash(cfg)
            value = self._memory.get(h)
            if value is None and self.store is not None:
                value = self.store.score(self.source, space.name, h, self.metric)
            if value is None:
                supernet, data = self._model()
                value = 100.0 * evaluate(supernet, cfg, data, self.split, self.calib_images, device=self.device)
                if self.store is not None:
                    self.store.add_score(self.source, space.name, h, cfg, self.metric, value,
                                         {"checkpoint": str(self.checkpoint), "calib_images": self.calib_images},
                                         macs=space.macs(cfg), params=space.params_count(cfg))
            self._memory[h] = value
            out.append(value)
        return np.asarray(out, dtype=float)
