"""Class-name text banks: templates x names through CLIP's text tower, aggregated, cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from benchmark import paths
from benchmark.atomic import save_torch_atomically
from methods.clip_backbone import ClipBackbone

AGGREGATIONS = ("mean_normalised", "mean_unnormalised")
CACHE_FORMAT = 1


@dataclass(frozen=True)
class TextBank:
    """One unit-norm embedding per name, synonyms flattened in class order."""

    embeddings: Tensor  # [n_names, dim] float32
    names: tuple[str, ...]
    name_to_class: tuple[int, ...]


def fill_template(template: str, name: str) -> str:
    return template.replace("{}", name)


def aggregate(embeddings: Tensor, rule: str) -> Tensor:
    """[..., n_templates, dim] -> [..., dim] unit norm.

    mean_normalised (CLIP, SCLIP, ClearCLIP, NACLIP): normalise each template embedding, average,
    normalise. mean_unnormalised (TCL): average the raw embeddings, normalise once.
    """
    if rule == "mean_normalised":
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
    elif rule != "mean_unnormalised":
        raise ValueError(f"text aggregation must be one of {AGGREGATIONS}, got {rule!r}")
    mean = embeddings.mean(dim=-2)
    return mean / mean.norm(dim=-1, keepdim=True)


def weights_identity(backbone: ClipBackbone) -> str:
    """The weights' sha256, or a digest of the parameters for a model that came from no file."""
    if backbone.weights_sha256:
        return backbone.weights_sha256
    digest = hashlib.sha256()
    for key, value in sorted(backbone.model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "params:" + digest.hexdigest()


def bank_cache_key(backbone: ClipBackbone, names: list[list[str]], templates: list[str], rule: str) -> str:
    material = {
        "format": CACHE_FORMAT,
        "backbone": backbone.name,
        "weights": weights_identity(backbone),
        "templates": list(templates),
        "names": [list(synonyms) for synonyms in names],
        "aggregation": rule,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class TextBankStore:
    """Embeddings on disk under ``<root>/<key>.pt``, written atomically; unreadable entries are misses."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str) -> Tensor | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged entry is recomputed
            return None

    def save(self, key: str, embeddings: Tensor) -> None:
        try:
            save_torch_atomically(self.path(key), embeddings)
        except OSError as error:
            warnings.warn(f"text bank not cached in {self.root}: {error}", stacklevel=2)


def text_bank_store(text_cache: str | os.PathLike | bool | None, weights_root: str | None) -> TextBankStore | None:
    """A method's on-disk text cache: None when ``text_cache`` is False, else that folder or
    ``<weights root>/text_banks``."""
    if text_cache is False:
        return None
    return TextBankStore(text_cache or paths.weights_root(weights_root) / "text_banks")


@torch.no_grad()
def encode_names(
    backbone: ClipBackbone, names: list[str], templates: list[str], rule: str, batch_size: int = 256
) -> Tensor:
    """[len(names), dim]: every template filled with every name, encoded, aggregated per name."""
    prompts = [fill_template(template, name) for name in names for template in templates]
    device = next(backbone.model.parameters()).device
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = backbone.tokenizer(prompts[start:start + batch_size]).to(device)
        chunks.append(backbone.model.encode_text(tokens).float())
    embeddings = torch.cat(chunks).reshape(len(names), len(templates), -1)
    return aggregate(embeddings, rule).cpu()


def build_text_bank(
    backbone: ClipBackbone,
    names: list[list[str]],
    templates: list[str],
    rule: str,
    store: TextBankStore | None = None,
) -> TextBank:
    if rule not in AGGREGATIONS:
        raise ValueError(f"text aggregation must be one of {AGGREGATIONS}, got {rule!r}")
    names = [[name.strip() for name in synonyms] for synonyms in names]
    flat = [name for synonyms in names for name in synonyms]
    name_to_class = tuple(k for k, synonyms in enumerate(names) for _ in synonyms)
    key = bank_cache_key(backbone, names, templates, rule) if store is not None else None
    embeddings = store.load(key) if store is not None else None
    if embeddings is None or embeddings.shape[0] != len(flat):
        embeddings = encode_names(backbone, flat, templates, rule)
        if store is not None:
            store.save(key, embeddings)
    return TextBank(embeddings, tuple(flat), name_to_class)
