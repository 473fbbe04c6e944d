"""Pictures of predictions: colour label maps, overlays with region outlines, names and a legend,
image | ground truth | prediction panels, and `zsbench predict` on one image through the same engine
as the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from benchmark.data import DatasetCard
from benchmark.inference import ImagePreprocessor, PreparedImage, ScoreHead, SlidingWindowPredictor
from benchmark.protocol import BackgroundSpec, Protocol
from methods.base import SegMethod

IGNORE_COLOUR = (224, 224, 192)  # VOC's colour for the ignore index 255
GAP = 6
OUTLINE_COLOUR = (255, 255, 255)
MAX_REGION_NAMES = 40


def voc_colours(count: int) -> np.ndarray:
    """The PASCAL VOC colour map (bit-interleaved class index), uint8 [count, 3]."""
    colours = np.zeros((count, 3), np.uint8)
    for index in range(count):
        value, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (red, green, blue)
    return colours


def palette(class_names: Sequence[str]) -> np.ndarray:
    """A colour per class; black only for a class 0 named background."""
    has_background = bool(class_names) and class_names[0].strip().lower() == "background"
    colours = voc_colours(len(class_names) + 1)
    return colours[:-1] if has_background else colours[1:]


def colourise(label: np.ndarray, colours: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class ids HxW -> RGB uint8 HxWx3; the ignore index (and any id without a colour) is IGNORE_COLOUR."""
    out = np.empty((*label.shape, 3), np.uint8)
    out[:] = IGNORE_COLOUR
    valid = (label >= 0) & (label < len(colours)) & (label != ignore_index)
    out[valid] = colours[label[valid]]
    return out


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def legend(entries: Sequence[tuple[str, tuple[int, int, int]]], width: int, size: int = 14) -> Image.Image:
    """Colour swatches with names, wrapped to `width` pixels."""
    font = _font(size)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line, swatch, pad = size + 8, size, 12
    placed, x, y = [], GAP, GAP
    for name, colour in entries:
        text_width = int(draw.textlength(name, font=font))
        item = swatch + 4 + text_width + pad
        if x > GAP and x + item > width:
            x, y = GAP, y + line
        placed.append((x, y, name, colour))
        x += item
    canvas = Image.new("RGB", (width, y + line + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for x, y, name, colour in placed:
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=tuple(int(c) for c in colour), outline="black")
        draw.text((x + swatch + 4, y), name, fill="black", font=font)
    return canvas


def _stack(top: Image.Image, bottom: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height), "white")
    canvas.paste(top, (0, 0))
    canvas.paste(bottom, (0, top.height))
    return canvas


def _resized(array: np.ndarray, height: int | None, nearest: bool) -> Image.Image:
    image = Image.fromarray(array)
    if height is None or image.height == height:
        return image
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.NEAREST if nearest else Image.BILINEAR)


def outlines(label: np.ndarray) -> np.ndarray:
    """bool HxW: the pixels on either side of a change of class."""
    edge = np.zeros(label.shape, bool)
    across = label[:, 1:] != label[:, :-1]
    down = label[1:, :] != label[:-1, :]
    edge[:, 1:] |= across
    edge[:, :-1] |= across
    edge[1:, :] |= down
    edge[:-1, :] |= down
    return edge


def _text_colour(colour: Sequence[int]) -> str:
    red, green, blue = (int(c) for c in colour)
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else "white"


def name_regions(picture: Image.Image, prediction: np.ndarray, class_names: Sequence[str], colours: np.ndarray,
                 size: int) -> None:
    """Writes each class name on its larger regions (largest first, where the name fits without covering
    another), in a box of the class's legend colour at the region's most interior point."""
    font = _font(size)
    draw = ImageDraw.Draw(picture)
    height, width = prediction.shape
    regions = []
    for k in np.unique(prediction):
        if not 0 <= k < len(class_names):
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats((prediction == k).astype(np.uint8), 4)
        regions += [(stats[c], int(k), c, components) for c in range(1, count)]
    text_boxes = {k: draw.textbbox((0, 0), class_names[k], font=font) for k in {region[1] for region in regions}}
    placed: list[tuple[int, int, int, int]] = []
    for stat, k, c, components in sorted(regions, key=lambda region: -region[0][cv2.CC_STAT_AREA]):
        if len(placed) >= MAX_REGION_NAMES:
            break
        left, top, right, bottom = text_boxes[k]
        box_width, box_height = right - left + 6, bottom - top + 4
        if stat[cv2.CC_STAT_AREA] < 2 * box_width * box_height:
            continue
        x_start, y_start = int(stat[cv2.CC_STAT_LEFT]), int(stat[cv2.CC_STAT_TOP])
        window = components[y_start:y_start + stat[cv2.CC_STAT_HEIGHT], x_start:x_start + stat[cv2.CC_STAT_WIDTH]]
        distance = cv2.distanceTransform(np.pad((window == c).astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
        if distance.max() < box_height / 2:
            continue  # too thin for its name
        y, x = np.unravel_index(int(distance.argmax()), distance.shape)
        x, y = x + x_start, y + y_start
        x0 = int(min(max(x - box_width // 2, 0), width - box_width))
        y0 = int(min(max(y - box_height // 2, 0), height - box_height))
        box = (x0, y0, x0 + box_width, y0 + box_height)
        if x0 < 0 or y0 < 0 or any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                                   for b in placed):
            continue
        colour = tuple(int(v) for v in colours[k])
        draw.rectangle(box, fill=colour, outline="black")
        draw.text((x0 + 3 - left, y0 + 2 - top), class_names[k], fill=_text_colour(colour), font=font)
        placed.append(box)


def _note(text: str, width: int, size: int) -> Image.Image:
    """Grey text wrapped to `width` pixels."""
    font = _font(size)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=font) > width - 2 * GAP:
            lines.append(line)
            candidate = word
        line = candidate
    lines.append(line)
    canvas = Image.new("RGB", (width, (size + 6) * len(lines) + GAP), "white")
    draw = ImageDraw.Draw(canvas)
    for index, content in enumerate(lines):
        draw.text((GAP, index * (size + 6)), content, fill=(110, 110, 110), font=font)
    return canvas


def overlay(
    image: np.ndarray, prediction: np.ndarray, class_names: Sequence[str], alpha: float = 0.5
) -> Image.Image:
    """The image blended with the prediction's colours, each region outlined and named; below, a legend of the
    predicted classes with their pixel shares, and the classes that were not predicted.

    Blended colours can look like another class's legend colour; the outlines and names say which class a
    region is.
    """
    colours = palette(class_names)
    blended = (image.astype(np.float32) * (1 - alpha) + colourise(prediction, colours) * alpha).astype(np.uint8)
    blended[outlines(prediction)] = OUTLINE_COLOUR
    picture = Image.fromarray(blended)
    size = max(14, image.shape[1] // 60)
    name_regions(picture, prediction, class_names, colours, max(11, min(image.shape[:2]) // 28))
    counts = np.bincount(prediction.reshape(-1).clip(0, len(class_names)), minlength=len(class_names) + 1)
    total = max(int(prediction.size), 1)
    predicted = sorted((k for k in range(len(class_names)) if counts[k]), key=lambda k: -counts[k])
    entries = [(f"{class_names[k]} {100 * counts[k] / total:.1f}%", tuple(colours[k])) for k in predicted]
    picture = _stack(picture, legend(entries, image.shape[1], size=size))
    absent = [name for k, name in enumerate(class_names) if not counts[k]]
    if absent:
        picture = _stack(picture, _note("not predicted: " + ", ".join(absent), image.shape[1], size))
    return picture


def save_overlay(
    image: np.ndarray, prediction: np.ndarray, class_names: Sequence[str], out: Path, alpha: float = 0.5
) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    overlay(image, prediction, class_names, alpha).save(out)
    return out


def save_examples(
    image: np.ndarray,
    label: np.ndarray,
    prediction: np.ndarray,
    class_names: Sequence[str],
    out: Path,
    ignore_index: int = 255,
    height: int | None = 320,
) -> Path:
    """Writes one PNG: image | ground truth | prediction side by side (scaled to `height` pixels, None keeps
    the size), with a legend of the classes that appear in either map.

    image: the original RGB uint8 HxWx3; label: the card's class ids HxW (after reduce_zero_label, with the
    ignore index); prediction: the engine's class ids HxW at the label's size; class_names: the card's.
    """
    if image.shape[:2] != label.shape or label.shape != prediction.shape:
        raise ValueError(f"sizes differ: image {image.shape[:2]}, label {label.shape}, prediction {prediction.shape}")
    colours = palette(class_names)
    label = np.asarray(label)
    prediction = np.asarray(prediction)
    panels = [
        _resized(np.ascontiguousarray(image), height, nearest=False),
        _resized(colourise(label, colours, ignore_index), height, nearest=True),
        _resized(colourise(prediction, colours, ignore_index), height, nearest=True),
    ]
    width = sum(panel.width for panel in panels) + GAP * 2
    strip = Image.new("RGB", (width, panels[0].height), "white")
    x = 0
    for panel in panels:
        strip.paste(panel, (x, 0))
        x += panel.width + GAP
    present = sorted({int(k) for k in np.unique(np.concatenate([label.ravel(), prediction.ravel()]))
                      if 0 <= k < len(class_names) and k != ignore_index})
    entries = [(class_names[k], tuple(colours[k])) for k in present]
    if (label == ignore_index).any():
        entries.append(("ignored", IGNORE_COLOUR))
    out.parent.mkdir(parents=True, exist_ok=True)
    _stack(strip, legend(entries, width)).save(out)
    return out


def examples_dir(run_folder: Path, benchmark: str) -> Path:
    """Where a run's qualitative examples for a benchmark live (the HTML leaderboard shows them)."""
    return run_folder / "examples" / benchmark


def example_path(run_folder: Path, benchmark: str, stem: str) -> Path:
    return examples_dir(run_folder, benchmark) / (stem.replace("/", "__").replace("\\", "__") + ".png")


def parse_classes(text: str) -> list[list[str]]:
    """"cat,dog|puppy,grass" -> [["cat"], ["dog", "puppy"], ["grass"]]: commas part classes, | synonyms."""
    classes = [[name.strip() for name in part.split("|") if name.strip()] for part in text.split(",")]
    return [synonyms for synonyms in classes if synonyms]


def predict_image(
    method: SegMethod,
    protocol: Protocol,
    image: np.ndarray,
    classes: list[list[str]],
    benchmark: str | None = None,
    threshold: float | None = None,
    device: str = "cpu",
    batch_size: int = 16,
) -> tuple[np.ndarray, list[str]]:
    """Class ids HxW for one RGB uint8 image and the class names they index.

    Resize, window, templates, precision and method settings come from the protocol's benchmark
    (default: its first); background is none, or with `threshold` a constant-channel background class 0.
    """
    base = protocol.select([benchmark])[0] if benchmark else next(iter(protocol.benchmarks.values()))
    names = tuple(tuple(synonyms) for synonyms in classes)
    card_classes = (("background",) if threshold is not None else ()) + tuple(s[0] for s in names)
    card = DatasetCard(
        name="image", title="one image", source="zsbench predict", root=".", img_dir=".", ann_dir=".",
        img_suffix="", seg_map_suffix="", split=None, num_images=1, ignore_index=255, reduce_zero_label=False,
        has_background=threshold is not None, classes=card_classes, notes="", path=Path("<zsbench predict>"),
    )
    rule = BackgroundSpec("threshold", threshold) if threshold is not None else BackgroundSpec("none")
    spec = replace(base, name="image", dataset=card, class_names=names, background=rule, split=None)
    method.to(device).eval()
    method.setup(protocol, spec)
    bank = method.encode_classes([list(s) for s in names], protocol.text)
    predictor = SlidingWindowPredictor(method, [ScoreHead(spec, bank, threshold)], batch_size, device,
                                       protocol.precision)
    tensor = ImagePreprocessor(spec.image)(image)
    dummy_label = torch.zeros(image.shape[:2], dtype=torch.int64)
    item = PreparedImage(0, "image", tensor, dummy_label)
    (prediction,) = [*predictor.push(item), *predictor.flush()]
    return prediction.pred.cpu().numpy(), list(card_classes)
