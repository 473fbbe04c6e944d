"""TCL's masker: the only learned part of TCL (kakaobrain/tcl models/tcl/masker.py, tcl.py).

The masker takes the frozen CLIP tokens entering the last block (block 11 of ViT-B/16), runs a
trainable copy of that last block with the MaskCLIP trick, up-samples the patch features x4 with
the gated decoder, and projects them with a trainable copy of CLIP's final LayerNorm and
projection. A text's mask is ``sigmoid(w * cos + b)`` with learnable scalars w, b (init 10, -2.5).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.clip_dense import last_block
from methods.tcl.clip_features import MASKCLIP_LAST_BLOCK
from methods.tcl.decoder import MaskDecoder

SIM2MASK_INIT = (10.0, -2.5)  # configs/tcl.yml masker.sim2mask init_w, init_b
NORMALIZE_EPS = 1e-6  # us/misc.py normalize: "large default eps for fp16"


def normalize(x: Tensor, dim: int) -> Tensor:
    return F.normalize(x, dim=dim, eps=NORMALIZE_EPS)


class ProjectionHead(nn.Module):
    """CLIP's final LayerNorm and projection applied to every position of a [B, D, H, W] map."""

    def __init__(self, ln: nn.LayerNorm, proj: Tensor) -> None:
        super().__init__()
        self.ln = ln
        self.proj = nn.Parameter(proj.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        x = self.ln(x.permute(0, 2, 3, 1)) @ self.proj
        return x.permute(0, 3, 1, 2)


class SimToMask(nn.Module):
    """Cosine similarity -> mask logits ``w * s + b``."""

    def __init__(self, w: float = SIM2MASK_INIT[0], b: float = SIM2MASK_INIT[1]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(w)))
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, similarity: Tensor) -> Tensor:
        return similarity * self.w + self.b


class TCLMasker(nn.Module):
    """Tokens before CLIP's last block -> text-grounded masks at 4x the patch grid."""

    def __init__(self, block: nn.Module, ln_post: nn.LayerNorm, proj: Tensor) -> None:
        super().__init__()
        self.block = block
        self.decoder = MaskDecoder(proj.shape[0])
        self.image_proj = ProjectionHead(ln_post, proj)
        self.sim2mask = SimToMask()

    @classmethod
    def from_clip(cls, visual: nn.Module) -> TCLMasker:
        """TCL's initialisation: copies of CLIP's last block, ln_post and proj; zero gates."""
        masker = cls(copy.deepcopy(visual.transformer.resblocks[-1]), copy.deepcopy(visual.ln_post), visual.proj)
        return masker.requires_grad_(True)

    def embed(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """[B, 1 + h*w, D] -> un-normalised embeddings [B, embed_dim, 4h, 4w]."""
        x = last_block(self.block, tokens, MASKCLIP_LAST_BLOCK, grid)[:, 1:]
        x = x.transpose(1, 2).reshape(x.shape[0], -1, grid[0], grid[1])
        return self.image_proj(self.decoder(x))

    def similarity(self, embeddings: Tensor, text: Tensor) -> Tensor:
        """Cosine similarity of every position with every text: [B, N, H, W]."""
        return torch.einsum("bchw,nc->bnhw", normalize(embeddings, 1), normalize(text, -1))

    def forward(self, tokens: Tensor, grid: tuple[int, int], text: Tensor) -> Tensor:
        """Soft masks [B, N, 4h, 4w] for N text embeddings."""
        return torch.sigmoid(self.sim2mask(self.similarity(self.embed(tokens, grid), text)))
