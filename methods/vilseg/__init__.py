"""ViL-Seg (Liu et al., ECCV 2022): model, losses, training and the SegMethod adapter."""

from methods.vilseg.adapter import ViLSeg

__all__ = ["ViLSeg"]
