"""Judges of edits and generators: statistics with confidence intervals (more judges to come)."""
from pbw.evaluation.stats import mean_interval, wilson_interval

__all__ = ["mean_interval", "wilson_interval"]
