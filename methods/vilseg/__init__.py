"""ViL-Seg (Liu et al., ECCV 2022): model, losses, training and the SegMethod adapter."""

from methods.vilseg import (
    demo,  # noqa: F401  (registers its demo entry)
    trainer,  # noqa: F401  (registers `zsbench train vilseg`)
)
from methods.vilseg.adapter import ViLSeg

__all__ = ["ViLSeg"]
