"""Editing with words: the editing core (`Editor`, `EditRequest`, `EditSettings`, `EditResult`),
masks, losses, the batched CMA-ES and the EditModule it runs."""

from pbw.editing.cmaes import SepCMAES
from pbw.editing.editor import Cancel, EditCallback, EditFailure, Editor, EditProgress, StopEdit, TimeLimit
from pbw.editing.losses import PreservationLoss, build_lpips
from pbw.editing.masks import MaskError, load_mask, mask_overlay
from pbw.editing.module import MASK_MODES, OPTIMIZERS, EditModule, EditSettings
from pbw.editing.request import EditRequest, Region
from pbw.editing.result import EditResult, Layer

__all__ = [
    "MASK_MODES",
    "OPTIMIZERS",
    "Cancel",
    "EditCallback",
    "EditFailure",
    "EditModule",
    "EditProgress",
    "EditRequest",
    "EditResult",
    "EditSettings",
    "Editor",
    "Layer",
    "MaskError",
    "PreservationLoss",
    "Region",
    "SepCMAES",
    "StopEdit",
    "TimeLimit",
    "build_lpips",
    "load_mask",
    "mask_overlay",
]
