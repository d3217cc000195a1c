"""Fused ops for StyleGAN2-style generators: bias + activation and up/FIR/down resampling.

Every op has a reference PyTorch implementation (always correct, used on the CPU) and, where it
builds, a fused CUDA kernel behind the same function.
"""

from .bias_act import ACTIVATIONS, bias_act
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = [
    "ACTIVATIONS",
    "bias_act",
    "downsample2d",
    "filter2d",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]
