"""TCL's training losses (paper Sec. 3; kakaobrain/tcl models/tcl/tcl.py, mi.py, gumbel.py).

With B local pairs on each of D ranks (N = B*D texts in all) and a local pair's global index
``rank * B + b``:

- image-level text-grounded contrastive loss (TCL_I): InfoNCE between CLIP's embedding of each
  image masked by its own caption's hard mask and the caption embeddings;
- feature-level text-grounded contrastive loss (TCL_F): ``ExtendedInfoNCE``, the image embedding
  pooled by each text's soft mask, so image b is compared with text n through mask (b, n);
- area priors: ``|mean(positive masks) - 0.4|`` and ``|mean(negative masks) - 0|``;
- smoothness priors: total variation of the masker's embedding map and of the soft masks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.distributed import rank_and_world
from methods.tcl.distributed import gather_cat
from methods.tcl.model import normalize

TEMPERATURE_INIT = 0.07  # mi.py InfoNCE(T_init=0.07)
MAX_LOGIT_SCALE = 100.0  # mi.py: torch.clamp(logit_scale.exp(), max=100)
POOL_EPS = 1e-6  # tcl.py masked_pool


class LogitScale(nn.Module):
    """A learnable contrastive temperature: exp(s) clamped at 100, s initialised to log(1/0.07)."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / TEMPERATURE_INIT)))

    def forward(self) -> Tensor:
        return torch.clamp(self.logit_scale.exp(), max=MAX_LOGIT_SCALE)


def local_targets(batch: int, device: torch.device) -> Tensor:
    rank, _ = rank_and_world()
    return torch.arange(batch, device=device) + batch * rank


def info_nce(image: Tensor, text: Tensor, scale: Tensor) -> Tensor:
    """Symmetric InfoNCE of local pairs [B, C] against every rank's pairs."""
    image, text = normalize(image, -1), normalize(text, -1)
    targets = local_targets(image.shape[0], image.device)
    per_image = image @ gather_cat(text).t()
    per_text = text @ gather_cat(image).t()
    return 0.5 * (F.cross_entropy(per_image * scale, targets) + F.cross_entropy(per_text * scale, targets))


def extended_info_nce(pooled: Tensor, text: Tensor, scale: Tensor) -> Tensor:
    """pooled [B, N, C]: local image b pooled by the mask of global text n; text [B, C] local.

    With s[i, j] = cos(image i pooled by text j's mask, text j) over the global batch (mi.py
    docstring: "s = einsum('ijc,jc->ij', img_emb, txt_emb)"), the loss is InfoNCE over the rows
    and the columns of s. Each rank computes its images' rows; the columns of its texts come from
    the gathered rows. (The reference's multi-GPU code gathers pooled embeddings instead, which
    compares a text with other ranks' images pooled by other texts' masks; on one GPU the two agree.)
    """
    rank, _ = rank_and_world()
    pooled, text = normalize(pooled, -1), normalize(text, -1)
    batch = text.shape[0]
    targets = local_targets(batch, text.device)
    per_image = torch.einsum("bnc,nc->bn", pooled, gather_cat(text))
    per_text = gather_cat(per_image)[:, rank * batch:(rank + 1) * batch].t()
    return 0.5 * (F.cross_entropy(per_image * scale, targets) + F.cross_entropy(per_text * scale, targets))


def masked_pool(embeddings: Tensor, masks: Tensor) -> Tensor:
    """embeddings [B, C, H, W], masks [B, N, H, W] -> mask-weighted means [B, N, C]."""
    weights = masks / (masks.sum(dim=(2, 3), keepdim=True) + POOL_EPS)
    return torch.einsum("bchw,bnhw->bnc", embeddings, weights)


def area_loss(masks: Tensor, prior: float) -> Tensor:
    """|mean of all mask values - prior|, over the whole batch."""
    return (masks.mean() - prior).abs()


def tv_loss(x: Tensor) -> Tensor:
    """Anisotropic total variation of [*, *, H, W]: mean |horizontal diff| + mean |vertical diff|."""
    return (x[..., :, :-1] - x[..., :, 1:]).abs().mean() + (x[..., :-1, :] - x[..., 1:, :]).abs().mean()


def gumbel_sigmoid_hard(logits: Tensor, tau: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Hard 0/1 sample of sigmoid((logits + logistic noise) / tau), straight-through gradients."""
    uniform = torch.rand_like(logits, generator=generator)
    soft = torch.sigmoid((logits + torch.log(uniform / (1.0 - uniform))) / tau)
    return soft.gt(0.5).to(soft.dtype) - soft.detach() + soft
