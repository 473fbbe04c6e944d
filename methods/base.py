"""The one interface every segmentation method implements."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol, TextSpec


class SegMethod(abc.ABC):
    """A zero-shot segmenter seen by the engine.

    The engine owns resize, windows, stitching, synonym max-pooling, background, argmax and the
    metric; a method only turns normalised crops and a text bank into per-name scores. The life of
    a method in one run, per benchmark of the protocol::

        background_value(protocol, benchmark, rule)   once per benchmark, where the protocol leaves it open
        trained_classes()                             once per benchmark with a zero-shot split
        setup(protocol, benchmark)                    per-benchmark settings (logit scale, PAMR, ...)
        encode_classes(names, protocol.text)          -> bank; cached per (names, text) for the run
        for each image [3,H',W'] (methods that define it):
            encode_image(image[, original, stem])     -> context, handed to its crops as contexts=[...]
                                                     (and windows=[...], their places, with needs_windows)
        for each batch of crops [B,3,h,w]:
            score(encode_crops(crops), bank)          -> [B,n_names,h',w']  (benchmarks sharing images:
                                                         encode_crops once, score per benchmark)
            or predict_masks(crops, bank)             -> [B,n_names,h',w']
        for each image, scores stitched to label size (single_upsample: a whole-image crop's scores resized to it
        in one step; a large vocabulary a chunk of classes at a time, see refine_per_class):
            refine(image, scores)                     -> [n_names,H,W]  (e.g. PAMR)
            engine: synonyms max, background rule, argmax -> label map [H,W]
            refine_labels(probs, labels, context)     -> [H,W]  (methods that define it: Trident's SAM prompts)

    `encode_classes`, `encode_image` and `encode_crops` depend only on their arguments and the method's
    construction, never on `setup`, so their results can be cached and shared across benchmarks;
    `score`, `predict_masks`, `refine` and `refine_labels` may use what `setup` set. A method without
    `encode_crops`/`score` is never shared across benchmarks (one benchmark per pass), and its `encode_image` may
    read `setup` too. `config`, `checkpoint_sha256` and `backbone` are stored in every record.
    """

    name: ClassVar[str]
    score_kind: ClassVar[str]  # "logits" (softmax across names) or "probs" (independent)
    # the options a constructor with **options takes through it; None: any (not checked before construction)
    extra_options: ClassVar[tuple[str, ...] | None] = None
    # Under inference mode "whole": the crop's scores go from the method's grid to the label size in one bilinear
    # step, as methods that upsample their logits straight to the original size do (Trident), instead of to the
    # image and then to the label size (mmseg's EncoderDecoder). Windows are stitched as usual in slide mode.
    single_upsample: ClassVar[bool] = False
    # `encode_image` also receives the decoded image before the protocol's resize (`original=`) and the sample's
    # stem (`stem=`), for methods whose authors read the image file again (Trident's SAM pass) or files of their own
    # per image (CorrCLIP's region masks).
    needs_original_image: ClassVar[bool] = False
    # `predict_masks` / `encode_crops` also receive each crop's place in its image (`windows=[(y1, y2, x1, x2)]`), for
    # methods whose crops read a whole-image map of their own from the context (CorrCLIP's region masks).
    needs_windows: ClassVar[bool] = False
    # `refine` changes each name's scores from that name's scores and the image alone (PAMR does), so the engine may
    # refine a large vocabulary's names a chunk at a time; False where a refinement mixes classes (PEARL's TLP).
    refine_per_class: ClassVar[bool] = True

    # ---- required ------------------------------------------------------------------------------

    @abc.abstractmethod
    def encode_classes(self, names: list[list[str]], text: TextSpec) -> Any:
        """The text side, once per class set.

        Args:
            names: names[k] = the synonyms of prompted class k, in the benchmark's order.
            text: the protocol's templates (each with `{}` for the name) and aggregation rule.
        Returns:
            An opaque text bank, passed back to `predict_masks` / `score`.
        """

    @abc.abstractmethod
    def predict_masks(self, crops: Tensor, bank: Any) -> Tensor:
        """Scores of one batch of crops.

        Args:
            crops: [B,3,h,w] float, normalised as the protocol says.
            bank: from `encode_classes`.
        Returns:
            [B, n_names, h', w'] at any resolution <= (h, w) (any resolution with `single_upsample` under mode whole;
            the engine upsamples), n_names counting
            every synonym of every class in the bank's order; multiplied by the method's own logit
            scale when `score_kind` is "logits". Non-finite values stop the run (NumericalError).
        """

    # ---- optional engine hooks -----------------------------------------------------------------

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:  # noqa: B027
        """Before a benchmark's crops are scored: read its per-benchmark settings (method_settings)."""

    def encode_image(self, image: Tensor, original: Tensor | None = None, stem: str | None = None) -> Any:
        """Whole-image context for the crops of one image (CASS's CLIP vector of the whole image), once per image.

        Args:
            image: the resized, normalised image [3,h,w] whose windows are the crops.
            original: [H,W,3] uint8 RGB, the image as decoded from its file (label size), given to a method with
                `needs_original_image` (None where the caller has no file: tools, benches of crops).
            stem: the sample's file stem, with `original`.
        Returns:
            Opaque; a method that defines this hook receives `contexts` (one per crop, the context of the crop's
            image) as a keyword of `predict_masks` and `encode_crops`.
        """
        raise NotImplementedError

    def encode_crops(self, crops: Tensor) -> Any:
        """The image side of predict_masks, run once for several class sets (with `score`).

        Args:
            crops: [B,3,h,w] as for `predict_masks`.
        Returns:
            Opaque features; must not depend on the bank or on `setup`, and
            score(encode_crops(crops), bank) must equal predict_masks(crops, bank) exactly.
        """
        raise NotImplementedError

    def score(self, features: Any, bank: Any) -> Tensor:
        """Scores [B, n_names, h', w'] of encoded crops (`encode_crops`) against a bank."""
        raise NotImplementedError

    def refine(self, image: Tensor, scores: Tensor) -> Tensor:
        """Whole-image post-processing of the stitched scores.

        Args:
            image: the resized, normalised image [3,h,w].
            scores: [n_names, H, W] at label size.
        Returns:
            [n_names, H, W]. Default: unchanged.
        """
        return scores

    def refine_labels(self, probs: Tensor, labels: Tensor, context: Any) -> Tensor:
        """Post-processing of the label map, after the engine's background rule and argmax.

        Args:
            probs: [K,H,W] the probabilities `labels` is the argmax of: channel k is label k (class probabilities
                after the synonyms max, the `threshold` rule's constant channel in front; 0 for classes a zero-shot
                restriction leaves out).
            labels: [H,W] int64, the engine's label map at label size.
            context: the image's `encode_image` result (None for a method without that hook).
        Returns:
            [H,W] int64 label map, labels in [0, K).
        """
        raise NotImplementedError

    # ---- policy, asked once per benchmark ------------------------------------------------------

    def background_value(self, protocol: Protocol, benchmark: BenchmarkSpec, rule: str) -> float | None:
        """The threshold this method uses for `rule` ("threshold" or "prob_thd") where the protocol
        leaves it open; None: the method has none (the run then stops with an error)."""
        return None

    def trained_classes(self) -> set[str] | None:
        """Class names this method was trained on with dense labels (None: no dense labels).

        The runner refuses a zero-shot split whose unseen classes are among them.
        """
        return None

    # ---- provenance, stored in every record ----------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Settings that decide this method's numbers; part of the run's identity."""
        return {}

    def checkpoint_sha256(self) -> str | None:
        """sha256 of the weights file(s) the method loaded, if any."""
        return None

    def backbone(self) -> str | None:
        """A short description of the image backbone, for tables."""
        return None

    # ---- plumbing --------------------------------------------------------------------------------

    def uses_image_context(self) -> bool:
        """Whether the method implements `encode_image` (its crops then take `contexts=`)."""
        return type(self).encode_image is not SegMethod.encode_image

    def refines_labels(self) -> bool:
        """Whether the method implements `refine_labels`."""
        return type(self).refine_labels is not SegMethod.refine_labels

    def crop_context(self, images: list[Tensor]) -> dict[str, Any]:
        """Keywords for `predict_masks` / `encode_crops` of crops that are whole `images` (one per crop): `contexts`
        for a method with `encode_image`, `windows` for one with `needs_windows`. For callers outside the engine."""
        keywords: dict[str, Any] = {}
        if self.uses_image_context():
            keywords["contexts"] = [self.encode_image(image) for image in images]
        if self.needs_windows:
            keywords["windows"] = [(0, image.shape[-2], 0, image.shape[-1]) for image in images]
        return keywords

    def scores_from_features(self) -> bool:
        """Whether the method implements both encode_crops and score."""
        cls = type(self)
        return cls.encode_crops is not SegMethod.encode_crops and cls.score is not SegMethod.score

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
