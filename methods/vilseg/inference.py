"""ViL-Seg inference: cluster a crop's patches, pool each group, classify the groups against text.

Every patch goes to its most likely cluster (argmax of the clustering head); a group is the
patches of one cluster in one crop; its embedding is the mean of their tokens, projected into
the joint space and L2-normalised; every patch of the group gets the group's cosines with the
class-name embeddings. Crops whose sides are not multiples of the patch size are zero-padded
right and bottom (zero is the normalised mean colour), scored, upsampled to the padded size and
cut back to the crop.
"""

from __future__ import annotations

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


@torch.no_grad()
def group_cosines(model: ViLSegModel, crops: Tensor, text: Tensor) -> Tensor:
    """Cosine of each patch's group with each text embedding: [B, n_text, h, w] on the patch grid."""
    _, patches, grid = encode_tokens(model.clip.visual, crops)
    assignment = group_assignments(model, patches)
    groups = project(model.clip.visual, pooled_groups(patches, assignment, model.config.num_clusters))
    text = text.to(device=groups.device, dtype=groups.dtype)
    group_scores = groups @ text.t()  # [B,K,n]
    patch_scores = torch.gather(group_scores, 1, assignment.unsqueeze(-1).expand(-1, -1, text.shape[0]))
    return patch_scores.transpose(1, 2).unflatten(2, grid)


@torch.no_grad()
def crop_cosines(model: ViLSegModel, crops: Tensor, text: Tensor) -> Tensor:
    """group_cosines for crops of any size: the patch grid, or the crop's size where padding was needed."""
    height, width = crops.shape[-2:]
    patch_h, patch_w = model.patch_size
    pad_h, pad_w = -height % patch_h, -width % patch_w
    if pad_h == 0 and pad_w == 0:
        return group_cosines(model, crops, text)
    scores = group_cosines(model, F.pad(crops, (0, pad_w, 0, pad_h)), text)
    scores = F.interpolate(scores, size=(height + pad_h, width + pad_w), mode="bilinear", align_corners=False)
    return scores[..., :height, :width]
