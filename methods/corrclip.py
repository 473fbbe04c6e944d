"""CorrCLIP (Zhang et al., ICCV 2025): CLIP's last attention restricted to mask regions, with DINO's correlations.

What the reference computes (zdk258/CorrCLIP@181ad57, corrclip_segmentor.py, open_clip/transformer.py):

- per image, a region map at the original size (`generate_mask`: by default the authors' pre-generated SAM 2 masks,
  `<instance_mask_path>/<stem>.npz` key `instance_mask`, ints, the smallest id the unsegmented area), resized to the
  resized image (nearest); each window of forward_slide (336, stride 112; Cityscapes 224) takes its cut of it, the
  window zero-padded to a multiple of 56 around its centre where needed (its region ids with 10000);
- per window: `methods.corrclip_tower.corrclip_features` (DINO ViT-B/8's q + k, region merging, scope attention,
  region tokens, main / spatial / semantic branches) and cosines against the name embeddings (80 OpenAI templates:
  each normalised, mean, normalised) on the DINO grid, bilinear to the window; stitched, bilinear to the original size,
  x 40, softmax, synonyms max, prob_thd (voc21 0.2, context60 0.15, coco_object 0.25);
- map correction: every region of the original-size map but the smallest id takes the most frequent label in it
  (torch.mode), after prob_thd.

In the suite the image side does not depend on the class names: `encode_crops` returns the unit features of each
window, `score` (ClipBaseline's) their cosines, so benchmarks over the same images share one pass. `encode_image`
reads the image's region map (the engine hands the method each sample's stem and decoded image), and each window
cuts its own part (`needs_windows`); `refine_labels` is the map correction.

Decided here:
- the region maps come from files (`--opt region_masks=<folder>`, absolute or under the weights root: the authors'
  pre-generated masks, the setting of their README table). Generating them (SAM 2 automatic masks, cached per
  image) is not in this version: a run without the folder stops with an error that says where to get the files.
- the folder of a benchmark's maps is a property of its images (`region_mask_folders`, the authors' data layout:
  voc, context, coco, city, ade), which `encode_image` reads from `setup`; benchmarks that share a pass share images.
- precision: the reference runs CLIP and DINO in fp16; the affinities here are float32 with autocast off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark import paths
from benchmark.errors import BenchmarkError
from benchmark.registry import register_method
from methods.clip_baseline import checked_flag, checked_number, checked_positive_integer
from methods.clip_dense import CropFeatures, DenseRecipe, check_supported
from methods.corrclip_tower import TOWER, CorrSettings, corrclip_features, dino_query_key
from methods.proxyclip import center_padding
from methods.vfm_method import CLIP_MEAN, CLIP_STD, VfmClipMethod, crop_normalisation

if TYPE_CHECKING:
    from benchmark.protocol import BenchmarkSpec, Protocol

MASKS_SOURCE = ("the authors' pre-generated SAM 2 masks: region_masks.zip of the Hugging Face dataset dk258/CorrCLIP "
                "(https://huggingface.co/datasets/dk258/CorrCLIP), unpacked to a folder with voc/, context/, coco/, "
                "city/ and ade/")


@dataclass
class RegionMaps:
    """An image's region ids at its original size and at the resized image's size (nearest)."""

    original: Tensor  # [H, W] int64
    resized: Tensor  # [h, w] int64


def read_region_map(path: Path) -> np.ndarray:
    """The `instance_mask` array of an .npz file, as integers; one clear error for a missing or unreadable file."""
    if not path.is_file():
        raise BenchmarkError(f"corrclip: region map {path} not found; get {MASKS_SOURCE}, and pass its folder as "
                             "--opt region_masks=<folder>")
    try:
        with np.load(path, allow_pickle=False) as archive:
            ids = archive["instance_mask"]
    except (OSError, ValueError, KeyError) as error:
        raise BenchmarkError(f"corrclip: {path} is not a region map (an .npz with an integer 'instance_mask'): "
                             f"{error}; unpack it again from {MASKS_SOURCE}") from None
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise BenchmarkError(f"corrclip: {path} holds a {ids.dtype} array of shape {ids.shape}, not an integer "
                             "label map [H, W]")
    return ids


@register_method()
class CorrCLIP(VfmClipMethod):
    """CorrCLIP (Zhang et al., ICCV 2025): region-restricted attention with DINO correlations; map correction."""

    name = "corrclip"
    recipe: ClassVar[DenseRecipe] = TOWER
    needs_original_image = True  # for the sample's stem and size (generate_mask reads <stem>.npz)
    needs_windows = True
    extra_options = ("vfm", "vfm_weights", "region_masks", "alpha", "beta", "temperature", "merge_eps",
                     "pad_multiple", "map_correction", "spatial_layers")

    def __init__(self, model: str | None = "ViT-B-16-quickgelu", pretrained: str | None = "metaclip_fullcc",
                 checkpoint: str | None = None, weights_root: str | None = None, text_cache: str | bool | None = None,
                 backbone: Any = None, allow_torchscript: bool = False, **options: Any) -> None:
        """ClipBaseline's constructor with CorrCLIP's CLIP as the default: MetaCLIP ViT-B/16-quickgelu
        (configs/base_config.py clip_type='metaclip_fullcc', model_type='ViT-B-16-quickgelu')."""
        super().__init__(model, pretrained, checkpoint, weights_root, text_cache, backbone, allow_torchscript,
                         **options)

    def configure(self, given: dict[str, Any]) -> None:
        options = self.options
        for key in ("alpha", "beta", "temperature", "merge_eps"):
            checked_number("corrclip", "option", key, options[key])
        checked_positive_integer("corrclip", "option", "pad_multiple", options["pad_multiple"])
        checked_flag("corrclip", "option", "map_correction", options["map_correction"])
        depth = len(self.net.visual.transformer.resblocks)
        spatial = options["spatial_layers"]
        if spatial is None:  # the authors' NUM_SPATIAL by depth
            spatial = self.defaults["spatial_layers_by_depth"].get(depth, depth - 4)
        if isinstance(spatial, bool) or not isinstance(spatial, int) or not 1 <= spatial <= depth - 2:
            raise BenchmarkError(f"corrclip's spatial branch averages 1 to depth - 2 = {depth - 2} blocks of this "
                                 f"{depth}-block CLIP, got {spatial!r} (option spatial_layers; null: the authors' "
                                 "table, depth - 4 below 12 blocks)")
        self.settings = CorrSettings(options["alpha"], options["beta"], spatial, options["temperature"],
                                     options["merge_eps"])
        self.load_vision_model()
        self.crop_normalisation = (CLIP_MEAN, CLIP_STD)
        self.mask_folder: Path | None = None
        self.image_suffix = ".jpg"

    def setup(self, protocol: Protocol, benchmark: BenchmarkSpec) -> None:
        """Also reads the crops' normalisation and the folder of the benchmark's region maps."""
        super().setup(protocol, benchmark)
        self.crop_normalisation = crop_normalisation(benchmark.image.mean, benchmark.image.std)
        self.image_suffix = benchmark.dataset.img_suffix
        root = self.options["region_masks"]
        if root is None:  # before the first image: nothing is computed without the maps
            raise BenchmarkError(f"corrclip reads a region map per image: get {MASKS_SOURCE}, and pass its folder as "
                                 "--opt region_masks=<folder>")
        folder = self.defaults["region_mask_folders"].get(benchmark.dataset.name)
        if folder is None:
            raise BenchmarkError(f"corrclip has no region-map folder for dataset {benchmark.dataset.name!r}: add it to "
                                 "region_mask_folders in methods/clip_settings/corrclip.yaml")
        base = Path(root).expanduser()
        if not base.is_absolute() and not base.exists():  # a folder under the weights root, as weight files are
            base = paths.weights_root(self.weights_root) / base
        self.mask_folder = base / folder

    def config(self) -> dict[str, Any]:
        config = super().config()
        masks = config["options"].get("region_masks")
        if masks is not None:  # the folder's name, not its location: a run's identity holds no path
            config["options"]["region_masks"] = Path(masks).name
        return config

    # ---- image side ------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_image(self, image: Tensor, original: Tensor | None = None, stem: str | None = None) -> RegionMaps:
        """The image's region map at its original size and resized: `<region_masks>/<folder>/<name>.npz`, the name
        the image file's without its extension (generate_mask: Path(img_path).stem)."""
        if self.mask_folder is None:
            raise BenchmarkError("corrclip reads its region maps from the benchmark's folder: setup(protocol, "
                                 "benchmark) first (the engine does)")
        if stem is None:
            raise BenchmarkError("corrclip finds an image's region map by its stem: encode_image(image, original, "
                                 "stem) (the engine passes both)")
        path = self.mask_folder / f"{Path(stem + self.image_suffix).stem}.npz"
        ids = torch.from_numpy(read_region_map(path).astype(np.int64)).to(image.device)
        if original is not None and tuple(ids.shape) != tuple(original.shape[:2]):
            raise BenchmarkError(f"corrclip: region map {path} is {tuple(ids.shape)}, the image "
                                 f"{tuple(original.shape[:2])}: it belongs to another image or dataset version")
        resized = F.interpolate(ids[None, None].float(), size=tuple(image.shape[-2:]), mode="nearest")[0, 0].long()
        return RegionMaps(ids, resized)

    @torch.no_grad()
    def encode_crops(self, crops: Tensor, contexts: list[RegionMaps] | None = None,
                     windows: list[tuple[int, int, int, int]] | None = None) -> CropFeatures:
        """Unit features [B, h/8, w/8, E] of each (padded) crop on the DINO grid, from its cut of the region map."""
        if contexts is None or windows is None or len(contexts) != len(crops) or len(windows) != len(crops):
            raise BenchmarkError("corrclip cuts each crop's region map from its image's: pass contexts=[encode_image"
                                 "(image, ...)] and windows=[(y1, y2, x1, x2)] per crop (the engine does)")
        visual = self.net.visual
        check_supported(visual)
        height, width = crops.shape[-2:]
        left, right, top, bottom = center_padding(height, width, self.options["pad_multiple"])
        padded = F.pad(crops, (left, right, top, bottom)) if any((left, right, top, bottom)) else crops
        units, grid = dino_query_key(self.vfm, self.vfm.renormalised(padded, *self.crop_normalisation))
        features = []
        for crop, unit, context, (y1, y2, x1, x2) in zip(padded, units, contexts, windows, strict=True):
            ids = context.resized[y1:y2, x1:x2]
            if any((left, right, top, bottom)):
                ids = F.pad(ids, (left, right, top, bottom), value=10000)  # forward_slide's pad value
            dense = corrclip_features(visual, crop, unit, grid, ids, self.settings).float()
            features.append(dense / dense.norm(dim=-1, keepdim=True))
        unit_features = torch.stack(features)
        if padded is crops:
            return CropFeatures(unit_features, (height, width))
        return CropFeatures(unit_features, (height, width), tuple(padded.shape[-2:]), (top, left))

    @torch.no_grad()
    def predict_masks(self, crops: Tensor, bank: Any, contexts: list[RegionMaps] | None = None,
                      windows: list[tuple[int, int, int, int]] | None = None) -> Tensor:
        return self.score(self.encode_crops(crops, contexts, windows), bank)

    # ---- map correction --------------------------------------------------------------------------

    @torch.no_grad()
    def refine_labels(self, probs: Tensor, labels: Tensor, context: RegionMaps | None) -> Tensor:
        """Map correction: each region of the original-size map but the smallest id takes its most frequent label."""
        if not self.options["map_correction"]:
            return labels
        if context is None:
            raise BenchmarkError("corrclip corrects the label map with the image's region map: the engine hands it "
                                 "encode_image(image, ...) as the context")
        ids = context.original.to(labels.device)
        if ids.shape != labels.shape:
            raise BenchmarkError(f"corrclip: the region map is {tuple(ids.shape)}, the label map "
                                 f"{tuple(labels.shape)}")
        corrected = labels.clone()
        for value in torch.unique(ids)[1:]:
            inside = ids == value
            corrected[inside] = torch.mode(corrected[inside])[0]
        return corrected
