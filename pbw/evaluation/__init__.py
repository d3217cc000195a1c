"""Judges of edits and generators: statistics with confidence intervals (`stats`), the miniature's pixel
oracle (`oracle`), the automated judges standing in for the paper's human studies (`judges`: evaluator
CLIP, FID/KID, preservation) and two-alternative preference (`preference`)."""

from pbw.evaluation.judges import EvaluatorCLIP, SameEvaluatorError, check_independent, fid_kid, preservation_outside
from pbw.evaluation.preference import Preference, pairwise_preference
from pbw.evaluation.stats import mean_interval, wilson_interval

__all__ = [
    "EvaluatorCLIP",
    "Preference",
    "SameEvaluatorError",
    "check_independent",
    "fid_kid",
    "mean_interval",
    "pairwise_preference",
    "preservation_outside",
    "wilson_interval",
]
