"""The tiny CLIP of the synthetic world: an ordinary open_clip model built from a config file.

The config lives in ``model_configs/`` as data and is registered with open_clip at import, so
``open_clip.create_model(MODEL_NAME, pretrained=<file>)`` builds and loads it exactly as real
CLIP weights load, and CLIP-based methods use it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from open_clip.model import CLIP
from PIL import Image

from benchmark.open_clip_notices import random_init_notice_silenced

MODEL_NAME = "TinyCLIP-Synth-ViT-8"
CONFIG_FILE = Path(__file__).parent / "model_configs" / f"{MODEL_NAME}.json"


def register_model_config() -> None:
    """Make ``MODEL_NAME`` known to open_clip (idempotent)."""
    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_FILE)


register_model_config()


def create_tiny_clip(seed: int = 0, device: str | torch.device = "cpu") -> CLIP:
    """A freshly initialised tiny CLIP; the same seed gives the same weights. Global RNG untouched."""
    with torch.random.fork_rng(devices=[]), random_init_notice_silenced():
        torch.manual_seed(seed)
        model = open_clip.create_model(MODEL_NAME, pretrained=None, device=device)
    return model


def load_tiny_clip(checkpoint: Path | str, device: str | torch.device = "cpu") -> CLIP:
    """The tiny CLIP with weights from an open_clip state-dict file, in eval mode."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(
            f"tiny CLIP checkpoint not found: {checkpoint} (train one with benchmark.synthetic.train_clip)"
        )
    model = open_clip.create_model(MODEL_NAME, pretrained=str(checkpoint), device=device)
    return model.eval()


def tiny_clip_tokenizer() -> open_clip.tokenizer.SimpleTokenizer:
    """open_clip's default BPE tokenizer at the tiny CLIP's context length."""
    return open_clip.get_tokenizer(MODEL_NAME)


def tiny_clip_preprocess() -> Callable[[Image.Image], torch.Tensor]:
    """open_clip's evaluation transform for the tiny CLIP (resize, centre crop, CLIP mean/std)."""
    model_cfg = open_clip.get_model_config(MODEL_NAME)
    size = model_cfg["vision_cfg"]["image_size"]
    return open_clip.image_transform(size, is_train=False)
