"""The ViL-Seg network: an open_clip CLIP (image and text encoders) plus the projection and clustering heads."""

from __future__ import annotations

import copy
from dataclasses import asdict, is_dataclass, replace

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import QuickGELU
from torch import Tensor, nn

from methods.clip_backbone import ClipBackbone, ensure_model_config, openai_config_from_state_dict
from methods.vilseg.config import ClipArch, ViLSegConfig
from methods.vilseg.encoder import check_encoder, encode_tokens, pool, project
from methods.vilseg.heads import ClusterHead, ProjectionHead


class ViLSegModel(nn.Module):
    def __init__(self, clip: CLIP, config: ViLSegConfig) -> None:
        super().__init__()
        check_encoder(clip.visual)
        self.clip = clip
        self.config = config
        width = self.width
        self.vision_head = ProjectionHead(width, config.head_hidden, config.head_bottleneck, config.head_out)
        self.cluster_head = ClusterHead(width, config.cluster_hidden or width, config.num_clusters)

    @property
    def width(self) -> int:
        return int(self.clip.visual.conv1.weight.shape[0])

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.clip.visual.conv1.weight.shape[-2:])

    def forward(
        self, global_images: Tensor, local_images: Tensor, tokens: Tensor, with_global_scores: bool = True
    ) -> dict[str, Tensor]:
        """One training forward pass (a dict of tensors, as DistributedDataParallel expects).

        Inputs: global views [B,3,S,S] and local views [V,B,3,s,s], normalised; caption tokens [B,L].
        Outputs, float32: ``image`` and ``text`` [B,E] unit-norm embeddings; ``local_scores``
        [V,B,P] projection-head scores of the local views; ``global_scores`` [B,P] those of the
        global views without gradient (when asked: the teacher is then the model itself);
        ``global_clusters`` [B,K,h,w] and ``local_clusters`` [V,B,K,h',w'] cluster logits per patch;
        ``logit_scale``, CLIP's exp(log scale).
        """
        visual, pooling = self.clip.visual, self.config.pooling
        cls_token, patches, grid = encode_tokens(visual, global_images)
        pooled = pool(cls_token, patches, pooling)
        views, batch = local_images.shape[:2]
        local_cls, local_patches, local_grid = encode_tokens(visual, local_images.flatten(0, 1))
        local_scores = self.vision_head(pool(local_cls, local_patches, pooling))
        outputs = {
            "image": project(visual, pooled).float(),
            "text": F.normalize(self.clip.encode_text(tokens).float(), dim=-1),
            "local_scores": local_scores.float().unflatten(0, (views, batch)),
            "global_clusters": _grid_maps(self.cluster_head(patches).float(), grid),
            "local_clusters": _grid_maps(self.cluster_head(local_patches).float(), local_grid).unflatten(
                0, (views, batch)
            ),
            "logit_scale": self.clip.logit_scale.exp().float(),
        }
        if with_global_scores:
            with torch.no_grad():
                outputs["global_scores"] = self.vision_head(pooled.detach()).float()
        return outputs


def _grid_maps(logits: Tensor, grid: tuple[int, int]) -> Tensor:
    """[B, h*w, K] -> [B, K, h, w]."""
    return logits.transpose(1, 2).unflatten(2, grid)


def uses_quick_gelu(clip: CLIP) -> bool:
    block = clip.visual.transformer.resblocks[0]
    return isinstance(getattr(block.mlp, "gelu", None), QuickGELU)


def arch_from_name(model: str) -> ClipArch:
    """The architecture of an open_clip config name (or a config .json file)."""
    name = ensure_model_config(model)
    config = copy.deepcopy(open_clip.get_model_config(name))
    quick_gelu = bool(config.pop("quick_gelu", False))
    return ClipArch(name, quick_gelu, _plain_clip_config(config, name))


def clip_arch(backbone: ClipBackbone) -> ClipArch:
    """The architecture of a loaded CLIP: its open_clip config, or the one read off its weights."""
    quick_gelu = uses_quick_gelu(backbone.model)
    if backbone.name in open_clip.list_models():
        return replace(arch_from_name(backbone.name), quick_gelu=quick_gelu)
    config = openai_config_from_state_dict(backbone.model.state_dict(), backbone.name)
    plain = {key: asdict(value) if is_dataclass(value) else value for key, value in config.items()}
    return ClipArch(backbone.name, quick_gelu, plain)


def _plain_clip_config(config: dict, name: str) -> dict:
    unsupported = sorted(key for key in config if key in ("custom_text", "multimodal_cfg"))
    text = config.get("text_cfg") or {}
    if unsupported or text.get("hf_model_name"):
        raise ValueError(f"{name}: ViL-Seg needs an open_clip CLIP with its built-in text transformer")
    return config


def build_clip(arch: ClipArch) -> CLIP:
    """A randomly initialised CLIP of the given architecture (float32, CPU)."""
    return CLIP(**copy.deepcopy(arch.config), quick_gelu=arch.quick_gelu)


def build_model(config: ViLSegConfig, clip: CLIP | None = None, seed: int | None = None) -> ViLSegModel:
    """The network for `config`; a given CLIP is used as is, the rest is initialised (seeded if asked)."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return ViLSegModel(clip if clip is not None else build_clip(config.clip), config).float()


def tokenizer_for(clip: CLIP) -> open_clip.tokenizer.SimpleTokenizer:
    """CLIP's BPE tokenizer at the model's context length (what open_clip gives every built-in text tower)."""
    return open_clip.tokenizer.SimpleTokenizer(context_length=int(clip.context_length))
