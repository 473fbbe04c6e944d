"""The device a command runs on: parsed and checked before anything is loaded."""

from __future__ import annotations

import argparse


def device_name(value: str) -> str:
    """An argparse type for --device: 'cpu', 'cuda', 'cuda:N' or 'mps', available on this machine."""
    if value == "cpu":
        return value
    import torch  # here: parsing a command line that runs on the CPU loads no torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {value!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(
                f"{value!r} asked, but torch {torch.__version__} finds no CUDA device here; use --device cpu"
            )
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(
                f"{value!r} asked, but there are {count} CUDA device(s): cuda:0..cuda:{count - 1}"
            )
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise argparse.ArgumentTypeError(f"{value!r} asked, but MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"device {value!r} is not supported; use cpu, cuda, cuda:N or mps")
    return value
