"""The two heads ViL-Seg adds on top of the image encoder.

- ``ProjectionHead``: maps an image token to scores over learned prototypes, for the
  vision-based (global-local) contrasting. Built as DINO's head: an MLP to a bottleneck,
  L2 normalisation, then cosines with L2-normalised prototypes (DINO's weight-normalised last
  layer with its norm fixed to 1).
- ``ClusterHead``: maps every patch token to K cluster logits; a softmax gives the soft
  assignment trained by mutual information, an argmax the groups used at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, hidden: int, bottleneck: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, bottleneck)
        )
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck))
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """[..., in_dim] -> prototype scores [..., out_dim] in [-1, 1]."""
        embedded = F.normalize(self.mlp(tokens), dim=-1)
        return embedded @ F.normalize(self.prototypes, dim=-1).to(embedded.dtype).t()


class ClusterHead(nn.Module):
    def __init__(self, in_dim: int, hidden: int, num_clusters: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, num_clusters))
        self.num_clusters = num_clusters

    def forward(self, tokens: Tensor) -> Tensor:
        """[..., in_dim] -> cluster logits [..., K]."""
        return self.mlp(tokens)
