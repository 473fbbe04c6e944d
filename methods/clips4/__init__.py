"""CLIP-S4 (He et al., CVPR 2023): language-guided self-supervised semantic segmentation."""

from methods.clips4 import (
    demo,  # noqa: F401  (registers its demo entry)
    trainer,  # noqa: F401  (registers `zsbench train clips4`)
)
from methods.clips4.adapter import CLIPS4
from methods.clips4.train import train_clips4

__all__ = ["CLIPS4", "train_clips4"]
