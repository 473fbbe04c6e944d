"""A whole image through the engine as `zsbench eval` runs it: resize, normalise, windows, stitch, refine,
background, argmax. The parity tests compare its label map with the reference's `predict`."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from benchmark.inference import ImagePreprocessor, PreparedImage, ScoreHead, SlidingWindowPredictor, resize_image
from benchmark.policy import resolve_background_value
from benchmark.protocol import BenchmarkSpec, Protocol, TextSpec
from methods.base import SegMethod


def fixture_spec(protocol: Protocol, benchmark: str, class_names: list[list[str]], short: int) -> BenchmarkSpec:
    """The protocol's benchmark with the fixture's class names, resized to `short` (long side up to 2048)."""
    spec = protocol.benchmarks[benchmark]
    image = replace(spec.image, resize_short=short, resize_long_max=2048)
    return replace(spec, class_names=tuple(tuple(names) for names in class_names), image=image)


def resized_input(image: np.ndarray, spec: BenchmarkSpec) -> torch.Tensor:
    """[1, 3, h, w]: what the reference's `predict` receives (the engine's mmcv-equal resize and normalisation)."""
    return ImagePreprocessor(spec.image)(image)[None]


def engine_label_map(
    method: SegMethod, protocol: Protocol, spec: BenchmarkSpec, text: TextSpec, image: np.ndarray
) -> np.ndarray:
    """Label map [H, W] at the original size, as the engine predicts it."""
    method.setup(protocol, spec)
    bank = method.encode_classes([list(names) for names in spec.class_names], text)
    value = resolve_background_value(method, protocol, spec)
    prepared = ImagePreprocessor(spec.image)(image)
    label = torch.zeros(image.shape[:2], dtype=torch.int64)
    predictor = SlidingWindowPredictor(method, [ScoreHead(spec, bank, value)], batch_size=4)
    item = PreparedImage(0, "parity", prepared, label, original=torch.from_numpy(image))
    predictions = [*predictor.push(item), *predictor.flush()]
    assert len(predictions) == 1 and resize_image(image, spec.image).shape[:2] == prepared.shape[-2:]
    return predictions[0].pred.cpu().numpy()
