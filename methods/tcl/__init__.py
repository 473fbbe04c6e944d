"""TCL (Cha et al., CVPR 2023): adapter, model, released-checkpoint loading and training."""

from methods.tcl.adapter import TCL

__all__ = ["TCL"]
