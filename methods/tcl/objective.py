"""TCL's training objective: the masker, its two contrastive temperatures and the weighted losses
(kakaobrain/tcl models/tcl/tcl.py TCL.forward, masker.py Masker.forward, configs/tcl.yml)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.distributed import rank_and_world
from methods.tcl.distributed import gather_cat
from methods.tcl.losses import (
    LogitScale,
    area_loss,
    extended_info_nce,
    gumbel_sigmoid_hard,
    info_nce,
    masked_pool,
    tv_loss,
)
from methods.tcl.model import TCLMasker, normalize


@dataclass(frozen=True)
class LossWeights:
    tcl: float = 0.1  # configs/tcl.yml model.tcl_w (both text-grounded contrastive losses)
    area: float = 0.4  # model.area_w
    tv: float = 1.0  # model.tv_w
    positive_area: float = 0.4  # tcl.py AreaTCLLoss(0.4)
    negative_area: float = 0.0  # tcl.py AreaTCLLoss(0.0)
    gumbel_tau: float = 1.0  # masker.sim2mask.gumbel_tau


class TCLObjective(nn.Module):
    """Every learned parameter of TCL training; forward returns the weighted losses (summed: the loss)."""

    def __init__(self, masker: TCLMasker, weights: LossWeights = LossWeights()) -> None:
        super().__init__()
        self.masker = masker
        self.image_scale = LogitScale()  # tcli_loss.logit_scale of the reference
        self.feature_scale = LogitScale()  # tclf_loss.logit_scale
        self.weights = weights

    def forward(
        self,
        tokens: Tensor,
        grid: tuple[int, int],
        text: Tensor,
        images: Tensor,
        encode_image: Callable[[Tensor], Tensor],
        noise: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """tokens: frozen CLIP tokens before the last block; text: raw caption embeddings [B, C];
        images: the normalised batch; encode_image: frozen CLIP image embedding (differentiable in its input);
        noise: the generator of the Gumbel noise of the hard masks."""
        w = self.weights
        batch = tokens.shape[0]
        rank, world = rank_and_world()
        embeddings = self.masker.embed(tokens, grid)  # [B, C, H, W]
        similarity = torch.einsum("bchw,nc->bnhw", normalize(embeddings, 1), gather_cat(normalize(text, -1)))
        logits = self.masker.sim2mask(similarity)  # [B, N, H, W] against every rank's texts
        soft = torch.sigmoid(logits)
        hard = gumbel_sigmoid_hard(logits, w.gumbel_tau, noise)
        rows = torch.arange(batch, device=logits.device)
        own = rows + batch * rank
        negative = torch.ones(batch, batch * world, dtype=torch.bool, device=logits.device)
        negative[rows, own] = False
        soft_negative = soft.masked_select(negative[..., None, None]).view(batch, batch * world - 1, *soft.shape[2:])
        masked_images = F.interpolate(hard[rows, own].unsqueeze(1), size=images.shape[2:]) * images
        return {
            "area_loss": area_loss(soft[rows, own], w.positive_area) * w.area,
            "neg_area_loss": area_loss(soft_negative, w.negative_area) * w.area,
            "tclf_loss": extended_info_nce(masked_pool(embeddings, soft), text, self.feature_scale()) * w.tcl,
            "tv_img_loss": tv_loss(embeddings) * w.tv,
            "tv_mask_loss": tv_loss(soft) * w.tv,
            "tcli_loss": info_nce(encode_image(masked_images), text, self.image_scale()) * w.tcl,
        }
