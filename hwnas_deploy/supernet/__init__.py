"""Weight-sharing supernets: one set of weights from which any sub-network is taken, trained
once; sub-network accuracy for search without training each network."""

from hwnas_deploy.supernet.data import Dataset, load_dataset
from hwnas_deploy.supernet.elastic import ElasticSupernet, accuracy, recalibrate_bn, space_for

__all__ = ["Dataset", "ElasticSupernet", "accuracy", "load_dataset", "recalibrate_bn", "space_for"]
