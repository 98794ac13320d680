"""Datasets for supernet training and sub-network evaluation.

* `digits` (the embedded default): scikit-learn's handwritten digits (1,797 8x8 grey images of
  10 classes, shipped inside scikit-learn, so no download), split 60/20/20 per class with a fixed
  seed into train / val / test;
* `PATH.npz` with `x_train, y_train, x_val, y_val` (optionally `x_test, y_test`), images as
  N x C x H x W or N x H x W x C (C = 1 or 3) or N x H x W;
* an image folder `PATH/CLASS_NAME/*.png|jpg|...`, split like digits.

Images are scaled to [0, 1] (uint8 / 255, digits / 16), standardised with the training split's
mean and standard deviation, given 3 channels (grey repeated) and resized to the sub-network's
resolution on the fly (bilinear), so one dataset serves every resolution of a space.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hwnas_deploy.errors import ConfigError

SPLIT_SEED = 0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # N x 3 x H x W float32, standardised
    y_train: np.ndarray  # N int64
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    num_classes: int

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in ("train", "val", "test"):
            raise ConfigError(f"split {name!r} is not one of train, val, test")
        x, y = getattr(self, f"x_{name}"), getattr(self, f"y_{name}")
        if x is None:
            raise ConfigError(f"dataset {self.name!r} has no {name} split")
        return x, y

    def batches(self, split: str, batch: int, resolution: int, *, shuffle: bool = False,
                seed: int = 0, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images resized to resolution, labels) in batches; `limit` caps the number of images."""
        x, y = self.split(split)
        order = np.random.default_rng(seed).permutation(len(x)) if shuffle else np.arange(len(x))
        if limit is not None:
            order = order[:limit]
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            yield resize(torch.from_numpy(x[idx]), resolution), torch.from_numpy(y[idx])

    def describe(self) -> dict:
        return {"name": self.name, "classes": self.num_classes, "train": len(self.y_train), "val": len(self.y_val),
                "test": 0 if self.y_test is None else len(self.y_test), "image": list(self.x_train.shape[1:])}


def resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def _stratified_split(y: np.ndarray, fractions=(0.6, 0.2)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SPLIT_SEED)
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        a = int(round(len(idx) * fractions[0]))
        b = a + int(round(len(idx) * fractions[1]))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:]), strict=True):
            part.extend(chunk.tolist())
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ConfigError(f"{where}: images must be N x C x H x W, N x H x W x C or N x H x W; got shape {x.shape}")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.shape[1] not in (1, 3):
        raise ConfigError(f"{where}: images need 1 or 3 channels; got shape {x.shape}")
    return x


def _finish(name: str, splits: dict[str, tuple[np.ndarray, np.ndarray]], scale: float,
            num_classes: int | None = None) -> Dataset:
    checked = {}
    for split, (x, y) in splits.items():
        where = f"{name}: {split}"
        if len(x) == 0:
            raise ConfigError(f"{where}: the split is empty")
        x = _to_nchw(np.asarray(x), f"{where} x")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise ConfigError(f"{where}: {len(x)} images but labels of shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.mod(y, 1) == 0):
                raise ConfigError(f"{where}: labels must be integers, got {y.dtype} values such as {y[0]!r}")
            y = y.astype(np.int64)
        x = x.astype(np.float32) / scale
        if not np.isfinite(x).all():
            raise ConfigError(f"{where}: images contain NaN or infinite values")
        checked[split] = (x, y.astype(np.int64))
    shapes = {s: x.shape[1:] for s, (x, _) in checked.items()}
    if len(set(shapes.values())) != 1:
        raise ConfigError(f"{name}: the splits' images differ in shape: {shapes}")
    classes = num_classes or int(max(y.max() for _, y in checked.values())) + 1
    for split, (_, y) in checked.items():
        if y.min() < 0 or y.max() >= classes:
            raise ConfigError(f"{name}: {split} labels must lie in 0..{classes - 1}; "
                              f"found {int(y.min())}..{int(y.max())}")
    train_classes = np.unique(checked["train"][1])
    if len(train_classes) < 2:
        raise ConfigError(f"{name}: the training split holds {len(train_classes)} class; at least 2 are needed")
    mean, std = checked["train"][0].mean(), checked["train"][0].std() or 1.0

    def norm(x: np.ndarray) -> np.ndarray:
        x = (x - mean) / std
        return np.ascontiguousarray(np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x, dtype=np.float32)

    test = checked.get("test")
    return Dataset(name, norm(checked["train"][0]), checked["train"][1], norm(checked["val"][0]), checked["val"][1],
                   norm(test[0]) if test else None, test[1] if test else None, classes)


def load_digits_dataset() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.images.astype(np.float32), digits.target.astype(np.int64)
    tr, va, te = _stratified_split(y)
    return _finish("digits", {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}, 16.0, 10)


def load_npz(path: Path) -> Dataset:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable .npz file: {exc}") from None
    missing = [k for k in ("x_train", "y_train", "x_val", "y_val") if k not in data.files]
    if missing:
        raise ConfigError(f"{path}: missing array(s) {missing}; an .npz dataset needs x_train, y_train, x_val, y_val "
                          f"(and optionally x_test, y_test); it has {sorted(data.files)}")
    splits = {s: (data[f"x_{s}"], data[f"y_{s}"]) for s in ("train", "val", "test") if f"x_{s}" in data.files}
    scale = 255.0 if data["x_train"].dtype == np.uint8 else 1.0
    return _finish(str(path), splits, scale)


def load_image_folder(path: Path) -> Dataset:
    from PIL import Image

    classes = sorted(d.name for d in path.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise ConfigError(f"{path}: an image folder needs one sub-folder per class (at least 2); found {classes}")
    images, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(f for f in (path / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"{path / name}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f in files:
            images.append(np.asarray(Image.open(f).convert("RGB")))
            labels.append(c)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise ConfigError(f"{path}: images differ in size ({sorted(shapes)[:4]}...); resize them to one size first")
    x, y = np.stack(images), np.asarray(labels, dtype=np.int64)
    tr, va, te = _stratified_split(y)
    return _finish(str(path), {"train": (x[tr], y[tr]), "val": (x[va], y[va]), "test": (x[te], y[te])}, 255.0,
                   len(classes))


def load_dataset(source: str | Path = "digits") -> Dataset:
    """`digits`, an `.npz` file or an image folder (see the module docstring)."""
    if str(source) == "digits":
        return load_digits_dataset()
    path = Path(source)
    if path.suffix == ".npz" and path.is_file():
        return load_npz(path)
    if path.is_dir():
        return load_image_folder(path)
    raise ConfigError(f"dataset {str(source)!r} is not 'digits', an existing .npz file or an image folder")
