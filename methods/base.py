"""The one interface every segmentation method implements."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from benchmark.demo import DemoAssets
    from benchmark.protocol import BenchmarkSpec, Protocol


class SegMethod(abc.ABC):
    """A zero-shot segmenter seen by the engine.

    The engine owns resize, windows, stitching, synonym max-pooling, background, argmax and
    the metric; a method only turns normalised crops and a text bank into per-name scores.
    """

    name: ClassVar[str]
    score_kind: ClassVar[str]  # "logits" (softmax across names) or "probs" (independent)

    @classmethod
    def demo_options(cls, assets: DemoAssets) -> dict[str, Any] | None:
        """Constructor options to run in the offline demo on the synthetic world, or None to sit it out.

        A learning method trains (and caches under assets.weights_dir) its tiny version here.
        """
        return None

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:  # noqa: B027
        """Called before a benchmark is evaluated; read protocol-dependent settings here."""

    @abc.abstractmethod
    def encode_classes(self, names: list[list[str]], templates: list[str]) -> Any:
        """names[k] = the synonyms of class k. Returns an opaque text bank, cached by the runner."""

    @abc.abstractmethod
    def predict_masks(self, crops: Tensor, bank: Any) -> Tensor:
        """crops [B,3,h,w] float, normalised as the protocol says.

        Returns scores [B, n_names, h', w'] at any resolution <= crop (the engine upsamples),
        where n_names counts every synonym of every class in the bank's order.
        """

    def encode_crops(self, crops: Tensor) -> Any:
        """Optional hook, with `score`: the image side of predict_masks, run once for several class sets.

        Must not depend on the bank or on `setup`, and score(encode_crops(crops), bank) must equal
        predict_masks(crops, bank) exactly. Benchmarks that share their images (VOC21/VOC20, ...)
        are then evaluated in one pass.
        """
        raise NotImplementedError

    def score(self, features: Any, bank: Any) -> Tensor:
        """Optional hook, with `encode_crops`: scores [B, n_names, h', w'] of encoded crops against a bank."""
        raise NotImplementedError

    def scores_from_features(self) -> bool:
        """Whether the method implements both encode_crops and score."""
        cls = type(self)
        return cls.encode_crops is not SegMethod.encode_crops and cls.score is not SegMethod.score

    def refine(self, image: Tensor, scores: Tensor) -> Tensor:
        """Whole-image post-processing of stitched scores [n_names,H,W] at label size.

        image is the resized, normalised image [3,h,w]. Default: no change.
        """
        return scores

    def background_value(self, protocol: Protocol, benchmark: BenchmarkSpec, rule: str) -> float | None:
        """The threshold this method uses for `rule` where the protocol leaves it open."""
        return None

    def trained_classes(self) -> set[str] | None:
        """Class names this method was trained on with dense labels (None: no dense labels).

        The runner refuses a zero-shot split whose unseen classes are among them.
        """
        return None

    def config(self) -> dict[str, Any]:
        """Settings that decide this method's numbers; stored in every record."""
        return {}

    def checkpoint_sha256(self) -> str | None:
        """sha256 of the weights file(s) the method loaded, if any."""
        return None

    def backbone(self) -> str | None:
        return None

    def modules(self) -> list[nn.Module]:
        """The torch modules to move between devices; default: every nn.Module attribute."""
        return [value for value in vars(self).values() if isinstance(value, nn.Module)]

    def to(self, device: torch.device | str) -> SegMethod:
        for module in self.modules():
            module.to(device)
        self.device = torch.device(device)
        return self

    def eval(self) -> SegMethod:
        for module in self.modules():
            module.eval()
        return self
