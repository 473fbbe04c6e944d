"""The shared base of methods whose class names go through a CLIP text tower."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from methods.base import SegMethod
from methods.clip_backbone import ClipBackbone
from methods.clip_text import TextBank, TextBankStore, build_text_bank

if TYPE_CHECKING:
    from benchmark.protocol import TextSpec


class ClipTextMethod(SegMethod):
    """A SegMethod whose text bank is CLIP text embeddings (cached on disk in `text_store`) and
    whose `predict_masks` is `score(encode_crops(crops), bank)`.

    A subclass sets in its constructor `clip` (the ClipBackbone whose text tower encodes the names),
    `text_store` (from methods.clip_text.text_bank_store) and, where it loaded its own weights file,
    `_checkpoint_sha256`; it implements `encode_crops` and `score`.
    """

    clip: ClipBackbone
    text_store: TextBankStore | None
    _checkpoint_sha256: str | None = None

    def encode_classes(self, names: list[list[str]], text: TextSpec) -> TextBank:
        """Every template x name through the text tower, aggregated by the protocol's rule; [n_names, dim]."""
        return build_text_bank(self.clip, names, list(text.templates), text.aggregation, self.text_store)

    @torch.no_grad()
    def predict_masks(self, crops: Tensor, bank: TextBank) -> Tensor:
        return self.score(self.encode_crops(crops), bank)

    def checkpoint_sha256(self) -> str | None:
        return self._checkpoint_sha256

    def backbone(self) -> str | None:
        return self.clip.describe()
