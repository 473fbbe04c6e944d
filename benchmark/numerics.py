"""The arithmetic a protocol's `precision` stands for, around each forward pass.

- fp32: IEEE fp32. On CUDA, TF32 is switched off for matrix products and cuDNN convolutions while
  the method runs (torch leaves cuDNN's TF32 on by default, which rounds convolution inputs to 10
  mantissa bits), so the numbers are the same as on any other fp32 device up to summation order.
- bf16 / fp16: autocast to that type on the engine's device; the engine still stitches, resizes and
  takes softmax and argmax in fp32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for CUDA matrix products and cuDNN inside the block; the previous flags after it."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


@contextmanager
def precision_mode(precision: str, device: torch.device) -> Iterator[None]:
    """The arithmetic of `precision` ('fp32', 'bf16' or 'fp16') for a forward pass on `device`."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is not None:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield
    elif precision != "fp32":
        raise ValueError(f"precision must be one of fp32, bf16, fp16; got {precision!r}")
    elif device.type == "cuda":
        with strict_fp32():
            yield
    else:
        yield
