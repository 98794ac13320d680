"""nn-Meter's latency predictors (Cortex-A76 CPU, Adreno 640 / 630 GPU, Myriad VPU), used as an
estimator: `Predictor("nn-meter:cortexA76cpu_tflite21")`, `--estimators nn-meter:NAME`.

nn-Meter predicts a network by detecting the kernels a TFLite runtime would run (fused conv + bn +
activation, and so on) in its ONNX graph and summing one regressor per kernel kind. Its
regressors are files the user fetches from nn-Meter's release (one pickle per kernel kind and a
`fusion_rules.json` per device); hwnas never downloads them. They are looked for in
`$HWNAS_NN_METER_DIR/<name>/`, else where nn-Meter keeps them (`data_folder` of
`~/.nn_meter/config/settings.yaml`, `~/.nn_meter/data` by default, then `predictor/<name>/`).
A missing package, folder or file is an error that says which and where it goes. Predictions are
in milliseconds, like nn-Meter's; the predictor is pre-trained, so fitting only checks the files.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hwnas_deploy.errors import PredictorError

PREFIX = "nn-meter:"


def _predictor_table() -> list[dict]:
    try:
        import nn_meter  # noqa: F401  (the package is what runs the predictors)
        import yaml
    except ImportError as exc:
        raise PredictorError(f"nn-Meter estimators need the nn-meter package ({exc.name} is missing): "
                             "pip install 'hwnas-deploy[nn-meter]'") from None
    table = Path(nn_meter.__file__).parent / "configs" / "predictors.yaml"
    return yaml.safe_load(table.read_text())


def data_root() -> Path:
    """The folder holding one sub-folder per nn-Meter predictor."""
    if os.environ.get("HWNAS_NN_METER_DIR"):
        return Path(os.environ["HWNAS_NN_METER_DIR"])
    settings = Path.home() / ".nn_meter" / "config" / "settings.yaml"
    if settings.is_file():
        import yaml

        folder = (yaml.safe_load(settings.read_text()) or {}).get("data_folder")
        if folder:
            return Path(folder) / "predictor"
    return Path.home() / ".nn_meter" / "data" / "predictor"


class NnMeterEstimator:
    """One nn-Meter predictor loaded from its files; `predict(space, configs)` in ms."""

    def __init__(self, name: str, root: str | Path | None = None):
        table = _predictor_table()
        info = next((p for p in table if p["name"] == name), None)
        if info is None:
            raise PredictorError(f"nn-Meter has no predictor {name!r}; it has "
                                 + ", ".join(p["name"] for p in table))
        self.name = name
        folder = Path(root) if root else data_root() / name
        wanted = [f"{k}.pkl" for k in info["kernel_predictors"]] + ["fusion_rules.json"]
        missing = [f for f in wanted if not (folder / f).is_file()]
        if missing:
            raise PredictorError(
                f"nn-Meter predictor {name!r} needs its files in {folder}: missing {', '.join(missing)}. "
                f"They are in {info.get('download', 'the nn-Meter release')} (unzip it into {folder.parent}), "
                "or set HWNAS_NN_METER_DIR to a folder holding "
                f"{name}/; hwnas does not download them."
            )
        kernels = {}
        for f in wanted[:-1]:
            try:
                with open(folder / f, "rb") as fh:
                    kernels[f[:-4]] = pickle.load(fh)  # nn-Meter's own format: trusted files only
            except Exception as exc:  # noqa: BLE001  (pickles fail in many ways across library versions)
                raise PredictorError(
                    f"{folder / f}: nn-Meter kernel predictor does not load ({type(exc).__name__}: {exc}); "
                    "nn-Meter's released files were pickled with scikit-learn 0.23 and may need that version"
                ) from None
        from nn_meter.predictor.nn_meter_predictor import nnMeterPredictor

        self._predictor = nnMeterPredictor(kernels, str(folder / "fusion_rules.json"))

    def fit(self, *args, **kwargs) -> NnMeterEstimator:  # pre-trained
        return self

    def predict(self, space, configs: Sequence[dict]) -> np.ndarray:
        """Export each config to ONNX and let nn-Meter detect and predict its kernels."""
        import logging

        from hwnas_deploy.export import export_subnet

        logging.getLogger("nn-Meter").setLevel(logging.ERROR)  # it warns on every untested onnx version
        out = []
        with tempfile.TemporaryDirectory() as tmp:
            for cfg in configs:
                art = export_subnet(space, cfg, "onnx", tmp)
                path = _without_weight_identities(Path(art.path))
                out.append(float(self._predictor.predict(str(path), model_type="onnx")))
                Path(art.path).unlink(missing_ok=True)
        return np.asarray(out)


def _without_weight_identities(path: Path) -> Path:
    """torch's exporter shares equal weights through Identity nodes, which nn-Meter's ONNX
    converter cannot read (it expects every node to have an op type it knows); each such Identity
    becomes a copy of its initializer."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[0]]), node.output[0]))
        else:
            keep.append(node)
    if len(keep) == len(g.node):
        return path
    del g.node[:]
    g.node.extend(keep)
    onnx.save(model, str(path))
    return path
