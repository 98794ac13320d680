"""The user's own models (.onnx, .tflite, .pt2, module.py:function): what they hold, and each as
a network the measurement layer exports, measures and stores beside sub-networks."""

from hwnas_deploy.graphs import Layer, ModelFacts
from hwnas_deploy.models.model import MODEL_SPACE, REACH, UserModel, load_calibration, load_model

__all__ = ["MODEL_SPACE", "REACH", "Layer", "ModelFacts", "UserModel", "load_calibration", "load_model"]
