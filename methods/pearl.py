"""PEARL (Pei et al., CVPR 2026): Procrustes-aligned attention and text-aware Laplacian propagation (PGSmall/PEARL).

What the reference computes (commit c26062b), with its defaults `arch='reduced'`, `attn_strategy='pearl'`:

- clip/model.py VisionTransformer.forward(return_all=True): CLIP's blocks unchanged up to the last; the last
  block's output is its attention alone (arch 'reduced': no residual, no feed-forward), the attention being
  custom_attn -> pearl/attn.py pa_attn (methods/pearl_attention.py: key-query Procrustes rotation by 5
  Newton-Schulz steps plus alpha_kk times centred key-key logits, in float32); ln_post and proj on every token.
  arch 'vanilla' keeps the residual and feed-forward branch; attn_strategy 'vanilla' is CLIP's q-k attention.
- pearl_ovss.py PEARL.forward_feature: unit patch features against the unit name embeddings (80 ImageNet
  templates, each embedding normalised, mean, normalised), patch-grid cosines bilinearly upsampled to the crop.
  Crops that are not a multiple of the patch lose their remainder to the patch convolution (h = H // patch);
  positional embeddings resized with scale_factor (h + 0.1) / grid (interpolate_pos_encoding, as SCLIP).
- PEARL.predict: slide (224/112) or whole-image cosines, bilinear to the original size, then TLP
  (pearl/prop.py, methods/pearl_propagation.py) on the cosines with the normalised input resized bilinearly to
  that size, then softmax(40 x logits), synonyms max, prob_thd (postprocess_result).

In the suite: `encode_crops` runs the tower up to the last block's input (independent of any benchmark), and
`score` runs the last block with the benchmark's alpha_kk (configs/cfg_ade20k.py and cfg_city_scapes.py set 0.3),
ln_post, proj and the cosines, times the logit scale. `refine` runs TLP on the stitched scores divided by the logit
scale (TLP's softmax sees cosines, as in the reference) and multiplies back; TLP reads the text embeddings of the
benchmark's names, so `setup` selects that class set and `refine` takes its embeddings from the banks that
`encode_classes` made (or encodes them). Where a protocol asks for PAMR (e.g. tcl8), it runs after TLP on its output.

Inputs the reference does not meet in its own runs, decided here:
- non-square crops (224 x 288, and the whole-image mode of VOC): pa_attn and TLP assume no square grid and the
  reference runs them as they are (parity fixture case crops_wide); so does the adapter.
- the demo's tiny CLIP (8 px patches, 64 px input): the patch grid follows the model's own patch size, as
  forward_feature does (`self.net.visual.patch_size`).
- precision: the reference on a GPU keeps CLIP in fp16 but computes pa_attn in float32 and casts back; the
  adapter computes the attention in float32 with autocast off, and TLP in float32 on the stitched scores (the
  reference's final fp16 cast of TLP's output on the GPU is not reproduced).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.demo_assets import register_demo_options
from benchmark.errors import BenchmarkError
from benchmark.registry import register_method
from methods.clip_attention import last_block_attention
from methods.clip_baseline import ClipBaseline, checked_number, tiny_clip_options
from methods.clip_dense import (
    CropFeatures,
    DenseRecipe,
    check_supported,
    feature_cosines,
    last_block_input,
    layer_norm,
)
from methods.clip_text import TextBank
from methods.pearl_attention import ALIGN_SOLVERS, procrustes_attention
from methods.pearl_propagation import propagate, text_trust

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol, TextSpec

ARCHS = ("reduced", "vanilla")
ATTENTION_STRATEGIES = ("pearl", "vanilla")
# The blocks before the last: CLIP's own (q-k attention, residual, feed-forward); remainders dropped.
TOWER = DenseRecipe(attention="qk", residual=True, ffn=True, patch_rule="drop", position_rule="scale_factor")
PER_BENCHMARK = ("alpha_kk", "propagation_grid")  # protocol method_settings > --opt > per-dataset default


@dataclass(frozen=True)
class PearlRecipe:
    """The image side of PEARL fixed at construction; alpha_kk is per benchmark (`setup`)."""

    arch: str
    attn_strategy: str
    use_kk: bool
    align_solver: str
    polar_iters: int
    tower: DenseRecipe = TOWER

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LastBlockInput:
    """Tokens [B, 1 + h*w, D] entering the last block of a batch of crops, their patch grid and crop size."""

    tokens: Tensor
    grid: tuple[int, int]
    crop_size: tuple[int, int]


def _checked_options(options: dict[str, Any]) -> dict[str, Any]:
    choices = {"arch": ARCHS, "attn_strategy": ATTENTION_STRATEGIES, "align_solver": ALIGN_SOLVERS}
    for key, allowed in choices.items():
        if options[key] not in allowed:
            raise BenchmarkError(f"pearl option {key} must be one of {list(allowed)}, got {options[key]!r}")
    for key in ("use_kk", "propagation"):
        if not isinstance(options[key], bool):
            raise BenchmarkError(f"pearl option {key} must be true or false, got {options[key]!r}")
    if isinstance(options["polar_iters"], bool) or not isinstance(options["polar_iters"], int) \
            or options["polar_iters"] < 1:
        raise BenchmarkError(f"pearl option polar_iters must be a positive integer, got {options['polar_iters']!r}")
    checked_number("pearl", "option", "alpha_kk", options["alpha_kk"])
    _checked_grid(options["propagation_grid"], "option")
    return options


def _checked_grid(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BenchmarkError(f"pearl {where} propagation_grid must be a positive integer, got {value!r}")
    return value


@register_method()
class PEARL(ClipBaseline):
    """PEARL (Pei et al., CVPR 2026): Procrustes-aligned last-block attention, text-aware Laplacian propagation."""

    name = "pearl"
    recipe: ClassVar[DenseRecipe] = TOWER
    extra_options = (
        "arch", "attn_strategy", "use_kk", "alpha_kk", "align_solver", "polar_iters", "propagation",
        "propagation_grid",
    )
    per_benchmark = PER_BENCHMARK
    refine_per_class = False  # TLP propagates the cosines with a trust computed from the whole class set

    def configure(self, given: dict[str, Any]) -> None:
        self.alpha_kk = self._benchmark_value("alpha_kk", {}, None)
        self.propagation_grid = self._benchmark_value("propagation_grid", {}, None)
        self.class_set: tuple[tuple[tuple[str, ...], ...], TextSpec] | None = None
        self._trust: dict[tuple, Tensor] = {}

    def build_recipe(self, options: dict[str, Any]) -> PearlRecipe:  # type: ignore[override]
        _checked_options(options)
        return PearlRecipe(options["arch"], options["attn_strategy"], options["use_kk"], options["align_solver"],
                           options["polar_iters"])

    def _benchmark_value(self, key: str, settings: dict[str, Any], dataset: str | None) -> Any:
        value, where = self.benchmark_setting(key, settings, dataset)
        if key == "alpha_kk":
            return checked_number("pearl", where, key, value)
        return _checked_grid(value, where)

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:
        super().setup(protocol, benchmark)
        settings, dataset = benchmark.method_settings, benchmark.dataset.name
        self.alpha_kk = self._benchmark_value("alpha_kk", settings, dataset)
        self.propagation_grid = self._benchmark_value("propagation_grid", settings, dataset)
        self.class_set = (tuple(tuple(names) for names in benchmark.class_names), protocol.text)

    # ---- text side -------------------------------------------------------------------------------

    def encode_classes(self, names: list[list[str]], text: TextSpec) -> TextBank:
        bank = super().encode_classes(names, text)
        self._trust[(tuple(tuple(synonyms) for synonyms in names), text)] = text_trust(bank.embeddings)
        return bank

    def _class_set_trust(self) -> Tensor:
        if self.class_set is None:
            raise BenchmarkError("pearl's propagation reads the benchmark's class names: call setup() before refine()")
        if self.class_set not in self._trust:
            names, text = self.class_set
            self.encode_classes([list(synonyms) for synonyms in names], text)
        return self._trust[self.class_set]

    # ---- image side ------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_crops(self, crops: Tensor) -> LastBlockInput:
        """The tokens entering the last block (CLIP's blocks unchanged before it); no benchmark setting needed."""
        visual = self.net.visual
        check_supported(visual)
        tokens, grid = last_block_input(visual, crops, self.active_recipe.tower)
        return LastBlockInput(tokens, grid, tuple(crops.shape[-2:]))

    def _last_block(self, block: nn.Module, x: Tensor, grid: tuple[int, int]) -> Tensor:
        recipe = self.active_recipe
        normed = layer_norm(block.ln_1, x)
        if recipe.attn_strategy == "pearl":
            attended = procrustes_attention(block.attn, normed, self.alpha_kk, recipe.use_kk, recipe.align_solver,
                                            recipe.polar_iters)
        else:
            attended = last_block_attention(block.attn, normed, "qk", grid)
        if recipe.arch == "reduced":
            return block.ls_1(attended)
        x = x + block.ls_1(attended)
        return x + block.ls_2(block.mlp(layer_norm(block.ln_2, x)))

    @torch.no_grad()
    def score(self, features: LastBlockInput, bank: TextBank) -> Tensor:
        visual = self.net.visual
        x = self._last_block(visual.transformer.resblocks[-1], features.tokens, features.grid)
        patches = (layer_norm(visual.ln_post, x[:, 1:]) @ visual.proj).float()
        patches = patches / patches.norm(dim=-1, keepdim=True)
        unit = patches.reshape(x.shape[0], features.grid[0], features.grid[1], -1)
        return feature_cosines(CropFeatures(unit, features.crop_size), bank.embeddings) * self.logit_scale

    # ---- whole image -----------------------------------------------------------------------------

    @torch.no_grad()
    def refine(self, image: Tensor, scores: Tensor) -> Tensor:
        """TLP on the cosines (scores / logit scale) at label size, guided by the image resized to it; then PAMR
        where the protocol asks for it."""
        if self.options["propagation"]:
            guide = F.interpolate(image[None].float(), size=scores.shape[-2:], mode="bilinear", align_corners=False)
            cosines = scores[None] / self.logit_scale
            refined = propagate(guide, cosines, self._class_set_trust(), self.propagation_grid)
            scores = refined[0] * self.logit_scale
        return super().refine(image, scores)


register_demo_options(PEARL.name, tiny_clip_options)
