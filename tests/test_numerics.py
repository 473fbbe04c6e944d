"""benchmark.numerics: what a protocol's precision switches on and off around a forward pass."""

from __future__ import annotations

import pytest
import torch

from benchmark.numerics import precision_mode, strict_fp32


@pytest.fixture
def tf32_on():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_strict_fp32_switches_tf32_off_inside_and_restores_it_after_an_error(tf32_on):
    with pytest.raises(RuntimeError, match="inside"), strict_fp32():
        assert not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
        raise RuntimeError("inside")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_fp32_on_cuda_is_strict_and_fp32_on_cpu_leaves_the_flags(tf32_on):
    with precision_mode("fp32", torch.device("cuda")):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    with precision_mode("fp32", torch.device("cpu")):
        assert torch.backends.cudnn.allow_tf32
        assert not torch.is_autocast_enabled("cpu")


def test_bf16_autocasts_matrix_products_on_the_device():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with precision_mode("bf16", torch.device("cpu")):
        product = a @ b
    assert product.dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp64"), precision_mode("fp64", torch.device("cpu")):
        pass
