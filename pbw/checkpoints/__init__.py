"""Load a generator from any supported checkpoint format, detected by content, never running code
from the file: pbw Lightning checkpoints, NVIDIA StyleGAN2-ADA/StyleGAN3 pickles (StyleGAN2
networks), NVIDIA's original TensorFlow StyleGAN2 pickles (configs E/F), rosinality
stylegan2-pytorch ``.pt`` files and BigGAN-PyTorch state dicts.

``pbw-checkpoints info FILE`` and ``pbw-checkpoints convert IN OUT``.
"""

from pbw.checkpoints.core import CheckpointError, ImportedNetworks, save_pbw_checkpoint
from pbw.checkpoints.loader import load_generator, read_checkpoint
from pbw.checkpoints.safe_pickle import UnsafePickleError

__all__ = [
    "CheckpointError",
    "ImportedNetworks",
    "UnsafePickleError",
    "load_generator",
    "read_checkpoint",
    "save_pbw_checkpoint",
]
