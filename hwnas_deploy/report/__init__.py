"""Figures of what the store holds (matplotlib, written as PNG)."""

from hwnas_deploy.report.figures import latency_vs_macs

__all__ = ["latency_vs_macs"]
