"""Latency and accuracy predictors fitted on measurements (see predictor.py for the file format)."""

from hwnas_deploy.predictors.data import Dataset, from_csv, from_store
from hwnas_deploy.predictors.estimators import ESTIMATORS
from hwnas_deploy.predictors.evaluation import holdout, kfold, learning_curve, metrics
from hwnas_deploy.predictors.features import FEATURE_SETS
from hwnas_deploy.predictors.predictor import Predictor

__all__ = [
    "Dataset", "ESTIMATORS", "FEATURE_SETS", "Predictor", "from_csv", "from_store", "holdout", "kfold",
    "learning_curve", "metrics",
]
