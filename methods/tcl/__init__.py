"""TCL (Cha et al., CVPR 2023): adapter, model, released-checkpoint loading and training."""

from methods.tcl import (
    demo,  # noqa: F401  (registers its demo entry)
    trainer,  # noqa: F401  (registers `zsbench train tcl`)
)
from methods.tcl.adapter import TCL

__all__ = ["TCL"]
