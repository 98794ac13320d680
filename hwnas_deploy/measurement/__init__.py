"""The measurement layer: what to measure (`Network`), one loop (export -> deploy -> measure ->
record) behind `Measurer` / `measure`, and executors that take the jobs (this process, a lab)."""

from hwnas_deploy.measurement.executor import Executor, InProcess
from hwnas_deploy.measurement.loop import Measurement, Measurer, Report, measure
from hwnas_deploy.measurement.network import ModuleNetwork, Network, SubNetwork
from hwnas_deploy.measurement.plan import Job, Outcome, Plan, cached_artifact, default_artifacts_dir

__all__ = ["Executor", "InProcess", "Job", "Measurement", "Measurer", "ModuleNetwork", "Network", "Outcome", "Plan",
           "Report", "SubNetwork", "cached_artifact", "default_artifacts_dir", "measure"]
