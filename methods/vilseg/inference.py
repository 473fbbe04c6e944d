"""ViL-Seg inference: cluster a crop's patches, pool each group, classify the groups against text.

Every patch goes to its most likely cluster (argmax of the clustering head); a group is the
patches of one cluster in one crop; its embedding is the mean of their tokens, projected into
the joint space and L2-normalised; every patch of the group gets the group's cosines with the
class-name embeddings. Crops whose sides are not multiples of the patch size are zero-padded
right and bottom (zero is the normalised mean colour), scored, upsampled to the padded size and
cut back to the crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.vilseg.encoder import encode_tokens, project
from methods.vilseg.model import ViLSegModel


def group_assignments(model: ViLSegModel, patches: Tensor) -> Tensor:
    """Patch tokens [B,N,D] -> hard cluster index [B,N]."""
    return model.cluster_head(patches).argmax(dim=-1)


def pooled_groups(patches: Tensor, assignment: Tensor, num_clusters: int) -> Tensor:
    """Mean token of every cluster in every crop [B,K,D]; clusters without patches are zero."""
    members = F.one_hot(assignment, num_clusters).to(patches.dtype)  # [B,N,K]
    counts = members.sum(dim=1).clamp_min(1)  # [B,K]
    return (members.transpose(1, 2) @ patches) / counts.unsqueeze(-1)


@dataclass(frozen=True)
class EncodedGroups:
    """The image side of crop_cosines: unit group embeddings, each patch's group, the grid and the crop size."""

    groups: Tensor  # [B,K,C] unit vectors in the joint space
    assignment: Tensor  # [B,N]
    grid: tuple[int, int]
    crop_size: tuple[int, int]
    padded_size: tuple[int, int] | None  # where the crop was padded to the patch size


@torch.no_grad()
def encode_groups(model: ViLSegModel, crops: Tensor) -> EncodedGroups:
    """Pads crops to the patch size (right, bottom), clusters their patches and embeds every group."""
    height, width = crops.shape[-2:]
    patch_h, patch_w = model.patch_size
    pad_h, pad_w = -height % patch_h, -width % patch_w
    if pad_h or pad_w:
        crops = F.pad(crops, (0, pad_w, 0, pad_h))
    _, patches, grid = encode_tokens(model.clip.visual, crops)
    assignment = group_assignments(model, patches)
    groups = project(model.clip.visual, pooled_groups(patches, assignment, model.config.num_clusters))
    padded_size = (height + pad_h, width + pad_w) if pad_h or pad_w else None
    return EncodedGroups(groups, assignment, grid, (height, width), padded_size)


def group_cosines(encoded: EncodedGroups, text: Tensor) -> Tensor:
    """Cosine of each patch's group with each text embedding: [B, n_text, h, w] on the patch grid,
    or at the crop's size where it was padded (upsampled to the padded size, then cut back)."""
    groups, assignment = encoded.groups, encoded.assignment
    text = text.to(device=groups.device, dtype=groups.dtype)
    group_scores = groups @ text.t()  # [B,K,n]
    patch_scores = torch.gather(group_scores, 1, assignment.unsqueeze(-1).expand(-1, -1, text.shape[0]))
    scores = patch_scores.transpose(1, 2).unflatten(2, encoded.grid)
    if encoded.padded_size is None:
        return scores
    height, width = encoded.crop_size
    scores = F.interpolate(scores, size=encoded.padded_size, mode="bilinear", align_corners=False)
    return scores[..., :height, :width]


@torch.no_grad()
def crop_cosines(model: ViLSegModel, crops: Tensor, text: Tensor) -> Tensor:
    """group_cosines for crops of any size: the patch grid, or the crop's size where padding was needed."""
    return group_cosines(encode_groups(model, crops), text)
