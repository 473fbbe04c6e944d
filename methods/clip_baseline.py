"""The SegMethod shared by the training-free CLIP baselines; each baseline is a DenseRecipe.

Settings, from strongest to weakest:
- the protocol's method_settings: ``logit_scale`` (number), ``pamr`` (false/null, true, or
  ``{steps, dilations}``);
- constructor options (``--opt``): the backbone and the method's variant options;
- the method's defaults per dataset card in ``clip_settings/<name>.yaml``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from benchmark.demo_assets import DemoAssets
from benchmark.errors import BenchmarkError
from methods.clip_backbone import ClipBackbone, load_clip
from methods.clip_dense import CropFeatures, DenseRecipe, crop_features, feature_cosines
from methods.clip_text import TextBank, text_bank_store
from methods.clip_text_method import ClipTextMethod
from methods.pamr import pamr, pamr_settings

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol

SETTINGS_DIR = Path(__file__).with_name("clip_settings")


@cache
def baseline_defaults(name: str) -> dict[str, Any]:
    """The method's own settings, clip_settings/<name>.yaml (keys explained in clip_settings/README.md)."""
    path = SETTINGS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise BenchmarkError(f"{name} has no settings file {path}: add one (see {SETTINGS_DIR / 'README.md'})")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def checked_number(method: str, where: str, key: str, value: Any) -> float:
    """A numeric option or setting (not a bool), or one error naming the method, where it came from and the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BenchmarkError(f"{method} {where} {key} must be a number, got {value!r}")
    return float(value)


def checked_flag(method: str, where: str, key: str, value: Any) -> bool:
    """A true/false option or setting, or one error naming the method, where it came from and the key."""
    if not isinstance(value, bool):
        raise BenchmarkError(f"{method} {where} {key} must be true or false, got {value!r}")
    return value


def checked_positive_integer(method: str, where: str, key: str, value: Any) -> int:
    """A positive integer option or setting (not a bool), or one error naming the method, where and the key."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchmarkError(f"{method} {where} {key} must be a positive integer, got {value!r}")
    return value


def tiny_clip_options(assets: DemoAssets) -> dict[str, Any]:
    """On the synthetic world: the tiny CLIP, loaded like any CLIP weights file."""
    return {"model": assets.clip_model, "pretrained": str(assets.clip_checkpoint)}


class ClipBaseline(ClipTextMethod):
    """A frozen CLIP whose last image block follows `recipe`; scores are logit-scaled cosines."""

    score_kind: ClassVar[str] = "logits"
    recipe: ClassVar[DenseRecipe]
    extra_options: ClassVar[tuple[str, ...]] = ()  # constructor options that change the recipe
    # options that are per-benchmark settings: a protocol's method_settings win over them (`benchmark_setting`)
    per_benchmark: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        model: str | None = "ViT-B-16",
        pretrained: str | None = "openai",
        checkpoint: str | None = None,
        weights_root: str | None = None,
        text_cache: str | bool | None = None,
        backbone: ClipBackbone | None = None,
        allow_torchscript: bool = False,
        **options: Any,
    ) -> None:
        self.defaults = baseline_defaults(self.name)
        unknown = sorted(set(options) - set(self.extra_options))
        if unknown:
            raise BenchmarkError(f"{self.name} has no option {unknown}; variant options: {list(self.extra_options)}")
        self.clip = backbone if backbone is not None else load_clip(
            model, checkpoint or pretrained, weights_root, allow_torchscript
        )
        per_model = self.defaults.get("models", {}).get(self.clip.name, {})  # e.g. layer indices of a shallow tower
        self.options = {key: options.get(key, per_model.get(key, self.defaults.get(key))) for key in self.extra_options}
        self.given_options = {key: options[key] for key in self.per_benchmark if key in options}
        self.active_recipe = self.build_recipe(self.options)
        self.net = self.clip.model
        self.text_store = text_bank_store(text_cache, weights_root)
        self.weights_root = weights_root
        self._checkpoint_sha256 = self.clip.weights_sha256
        self.logit_scale = self.default_logit_scale(None)
        self.pamr = pamr_settings(self.defaults.get("pamr"))
        self.configure(options)

    def configure(self, given: dict[str, Any]) -> None:  # noqa: B027 - an optional hook
        """After the model is loaded: settings a method derives from it and its options (`given`: the options
        passed, before the defaults filled the rest in; the merged ones are `self.options`)."""

    def build_recipe(self, options: dict[str, Any]) -> DenseRecipe:
        """The recipe for the given variant options; the class recipe unless a subclass says otherwise."""
        return self.recipe

    def benchmark_setting(self, key: str, settings: dict[str, Any], dataset: str | None) -> tuple[Any, str]:
        """A per-benchmark setting and where it came from: the protocol's method_settings ("method setting"), else
        the option given to the constructor, else the method's default for the dataset card ("option")."""
        if settings.get(key) is not None:
            return settings[key], "method setting"
        if key in self.given_options:
            return self.given_options[key], "option"
        return self.defaults.get("datasets", {}).get(dataset, {}).get(key, self.defaults.get(key)), "option"

    def default_logit_scale(self, dataset: str | None) -> float:
        per_dataset = self.defaults.get("datasets", {}).get(dataset, {})
        value = per_dataset.get("logit_scale", self.defaults.get("logit_scale"))
        if value is None:
            return float(self.net.logit_scale.exp().item())
        return float(value)

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:
        settings = benchmark.method_settings
        if settings.get("logit_scale") is not None:
            self.logit_scale = float(settings["logit_scale"])
        else:
            self.logit_scale = self.default_logit_scale(benchmark.dataset.name)
        self.pamr = pamr_settings(settings["pamr"] if "pamr" in settings else self.defaults.get("pamr"))

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> CropFeatures:
        return crop_features(self.net.visual, crops, self.active_recipe)

    @torch.no_grad()
    def score(self, features: CropFeatures, bank: TextBank) -> Tensor:
        return feature_cosines(features, bank.embeddings).float() * self.logit_scale

    @torch.no_grad()
    def refine(self, image: Tensor, scores: Tensor) -> Tensor:
        """PAMR on the stitched scores with the image resized to them, as SCLIP and NACLIP run it."""
        if self.pamr is None:
            return scores
        guide = F.interpolate(image[None].float(), size=scores.shape[-2:], mode="bilinear", align_corners=False)
        return pamr(guide, scores[None], self.pamr.steps, self.pamr.dilations)[0]

    def background_value(self, protocol: Protocol, benchmark: BenchmarkSpec, rule: str) -> float | None:
        """The method's own prob_thd for the dataset (its configs), or its default (0: no background).

        Also used for `threshold`: a constant channel v in front of the class probabilities wins
        exactly where every probability is below v, the decision prob_thd makes.
        """
        per_dataset = self.defaults.get("datasets", {}).get(benchmark.dataset.name, {})
        if rule in ("prob_thd", "threshold"):
            return float(per_dataset.get("prob_thd", self.defaults.get("prob_thd", 0.0)))
        return None

    def config(self) -> dict[str, Any]:
        """Stable for the life of the method: per-benchmark values follow from `defaults` and the protocol."""
        options = {key: value for key, value in self.options.items()
                   if key not in self.per_benchmark or key in self.given_options}
        return {
            "backbone": self.clip.name,
            "recipe": self.active_recipe.as_dict(),
            "options": options,
            "defaults": self.defaults,
        }
