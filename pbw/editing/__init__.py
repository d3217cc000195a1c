"""Editing with words: masks, losses, the batched CMA-ES, and the EditModule."""
from pbw.editing.cmaes import SepCMAES
from pbw.editing.losses import PreservationLoss, build_lpips
from pbw.editing.masks import MaskError, load_mask, mask_overlay
from pbw.editing.module import EditModule, EditRequest, EditSettings, run_edit

__all__ = ["EditModule", "EditRequest", "EditSettings", "MaskError", "PreservationLoss", "SepCMAES", "build_lpips",
           "load_mask", "mask_overlay", "run_edit"]
