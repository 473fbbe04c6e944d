"""Large vocabularies (A-847, PC-459): 16-bit labels with a non-255 void, the metric at 847 classes, and the engine's
class-chunked label step, each against an independent count or the engine's unchunked path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data import BenchmarkDataset, list_samples, load_card, read_label
from benchmark.errors import DataError
from benchmark.inference import PreparedImage, ScoreHead, SlidingWindowPredictor
from benchmark.metrics import ConfusionMatrix
from benchmark.protocol import BackgroundSpec
from tests.factories import make_spec, make_text
from tests.fakedata import write_card, write_fake_dataset
from tests.toy_method import ToyMethod

VOID = 1000  # a card's own void value, neither 255 nor a class


def write_wide_dataset(tmp_path: Path, suffix: str) -> tuple[Path, list[np.ndarray]]:
    """A 300-class card with void 1000 and two 16-bit label files (values above 255, 255 itself a class)."""
    cards = tmp_path / "cards"
    cards.mkdir(exist_ok=True)
    path = write_card(cards, f"wide{suffix[1:]}", [f"class {k}" for k in range(300)], 2, ignore_index=VOID,
                      seg_map_suffix=suffix)
    card = load_card(path)
    rng = np.random.default_rng(7)
    labels = []
    root = tmp_path / "data" / card.root
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for number in range(2):
        label = rng.choice(np.array([*range(300), VOID]), size=(9 + number, 13)).astype(np.uint16)
        label[0, 0], label[0, 1] = 255, 299
        Image.fromarray(label).save(root / "labels" / f"{number}{suffix}")
        image = rng.integers(0, 256, (9 + number, 13, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{number}.png")
        labels.append(label)
    (root / "val.txt").write_text("0\n1\n")
    return path, labels


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_sixteen_bit_labels_with_a_non_255_void_are_read_exactly(tmp_path, suffix):
    card_path, labels = write_wide_dataset(tmp_path, suffix)
    card = load_card(card_path)
    samples = list_samples(card, tmp_path / "data")
    dataset = BenchmarkDataset(card, samples, [0, 1], transform=lambda image: torch.zeros(1))
    areas = np.zeros(300, np.int64)
    expected = np.zeros(300, np.int64)
    for item, label in zip(dataset, labels, strict=True):
        read = item["label"].numpy()
        assert np.array_equal(read, label.astype(np.int64))
        areas += np.bincount(read[read != VOID], minlength=300)
        for k in range(300):
            expected[k] += int(np.count_nonzero(label == k))
    assert np.array_equal(areas, expected) and expected[255] >= 1 and expected[299] >= 1


def test_a_label_value_beyond_the_classes_names_the_file(tmp_path):
    card_path, _ = write_wide_dataset(tmp_path, ".tif")
    card = load_card(card_path)
    sample = list_samples(card, tmp_path / "data")[0]
    bad = np.full((9, 13), 300, np.uint16)
    Image.fromarray(bad).save(sample.label)
    with pytest.raises(DataError, match=rf"{sample.label}: label values \[300\].*300 classes \(ignore index {VOID}\)"):
        read_label(sample.label, card)
    Image.fromarray(np.zeros((9, 13), np.float32)).save(sample.label)
    with pytest.raises(DataError, match=rf"{sample.label}: label is a 'F' image, expected integer class indices"):
        read_label(sample.label, card)


def test_shipped_large_cards_read_their_miniature_trees(tmp_path):
    for name, classes in (("ade847", 847), ("context459", 459)):
        card = load_card(name)
        assert card.num_classes == classes and card.ignore_index == 65535 and card.seg_map_suffix == ".tif"
        write_fake_dataset(card, tmp_path, count=2, seed=1)
        for sample in list_samples(card, tmp_path):
            raw = np.asarray(Image.open(sample.label))
            assert raw.dtype == np.uint16
            assert np.array_equal(read_label(sample.label, card), raw.astype(np.int64))


def test_847_class_metric_equals_a_brute_force_count():
    rng = np.random.default_rng(3)
    classes, void = 847, 65535
    metric = ConfusionMatrix(classes, void)
    intersection = np.zeros(classes, np.int64)
    label_area = np.zeros(classes, np.int64)
    pred_area = np.zeros(classes, np.int64)
    for size in ((37, 50), (64, 21)):
        label = rng.integers(0, classes, size)
        label[rng.random(size) < 0.2] = void
        pred = np.where(rng.random(size) < 0.5, label, rng.integers(0, classes, size)) % classes
        metric.update(torch.from_numpy(pred), torch.from_numpy(label))
        for y in range(size[0]):
            for x in range(size[1]):
                if label[y, x] == void:
                    continue
                label_area[label[y, x]] += 1
                pred_area[pred[y, x]] += 1
                intersection[label[y, x]] += int(pred[y, x] == label[y, x])
    scores = metric.compute()
    union = label_area + pred_area - intersection
    present = union > 0
    expected = np.where(present, intersection / np.maximum(union, 1), np.nan)
    assert np.allclose(np.array(scores.iou)[present], expected[present], rtol=0, atol=1e-12)
    assert np.isnan(np.array(scores.iou)[~present]).all()
    assert scores.miou == pytest.approx(float(np.nanmean(expected)), abs=1e-12)
    assert scores.aacc == pytest.approx(intersection.sum() / label_area.sum(), abs=1e-12)
    resumed = ConfusionMatrix(classes, void)
    resumed.load_state_dict(metric.state_dict())
    assert torch.equal(resumed.matrix, metric.matrix)


class ManyNames(ToyMethod):
    """The toy method with a per-class refinement (a scaled 3x3 box blur of each name's scores)."""

    def refine(self, image, scores):
        blurred = torch.nn.functional.avg_pool2d(scores[None], 3, stride=1, padding=1, count_include_pad=False)[0]
        return 0.5 * scores + blurred


class ClassMixingRefine(ManyNames):
    refine_per_class = False

    def refine(self, image, scores):
        return scores - scores.mean(dim=0, keepdim=True)


class ProbabilityScores(ToyMethod):
    score_kind = "probs"

    def predict_masks(self, crops, bank):
        return super().predict_masks(crops, bank).sigmoid()


def label_maps(method, spec, images, score_bytes, background_value=None):
    bank = method.encode_classes([list(names) for names in spec.class_names], make_text())
    predictor = SlidingWindowPredictor(method, [ScoreHead(spec, bank, background_value)], batch_size=3,
                                       score_bytes=score_bytes)
    done = []
    for number, (image, label_size) in enumerate(images):
        label = torch.zeros(label_size, dtype=torch.int64)
        done.extend(predictor.push(PreparedImage(number, str(number), image, label)))
    done.extend(predictor.flush())
    return [prediction.pred for prediction in done]


def wide_names(count, synonyms_every=7):
    return [[f"c{k}", f"c{k} alt"] if k % synonyms_every == 0 else [f"c{k}"] for k in range(count)]


@pytest.mark.parametrize("method_class,rule,value,mode", [
    (ManyNames, "none", None, "slide"),
    (ManyNames, "prob_thd", 0.004, "slide"),
    (ManyNames, "threshold", 0.004, "slide"),
    (ProbabilityScores, "prob_thd", 0.9, "slide"),
    (ManyNames, "none", None, "whole"),
])
def test_class_chunked_label_maps_equal_the_unchunked_ones(method_class, rule, value, mode):
    generator = torch.Generator().manual_seed(0)
    images = [(torch.randn(3, 21, 34, generator=generator), (25, 40)),
              (torch.randn(3, 16, 16, generator=generator), (16, 16))]
    background = BackgroundSpec(rule, value)
    names = wide_names(300)
    spec = make_spec(names, background=background, mode=mode, crop=16 if mode == "slide" else None,
                     stride=8 if mode == "slide" else None)
    method = method_class(seed=2)
    full = label_maps(method, spec, images, score_bytes=1 << 40, background_value=value)
    # 64 KiB of scores: images of ~300 names x 1000 pixels are stitched in chunks of a few classes
    chunked = label_maps(method, spec, images, score_bytes=1 << 16, background_value=value)
    for whole, parts in zip(full, chunked, strict=True):
        assert torch.equal(whole, parts)
    assert any(len(torch.unique(pred)) > 20 for pred in full)  # the maps are not trivially constant


def test_chunking_engages_only_where_the_label_step_allows_it():
    spec = make_spec(wide_names(50))
    image = torch.zeros(3, 16, 16)
    for method, chunks in ((ManyNames(), True), (ClassMixingRefine(), False)):
        bank = method.encode_classes([list(names) for names in spec.class_names], make_text())
        predictor = SlidingWindowPredictor(method, [ScoreHead(spec, bank, None)], score_bytes=1024)
        assert predictor._chunks_classes(predictor.heads[0], (16, 16), torch.zeros(16, 16)) is chunks
    area_spec = make_spec(wide_names(50), background=BackgroundSpec("prob_thd", 0.1, area_thd=0.1))
    method = ManyNames()
    bank = method.encode_classes([list(names) for names in area_spec.class_names], make_text())
    predictor = SlidingWindowPredictor(method, [ScoreHead(area_spec, bank, 0.1)], score_bytes=1024)
    assert not predictor._chunks_classes(predictor.heads[0], image.shape[-2:], torch.zeros(16, 16))


def test_a_metric_ignore_index_other_than_the_cards_counts_void_predictions_as_mmseg_does():
    """mmseg IoUMetric(ignore_index=255) on 16-bit labels (ProxyCLIP's and Trident's A-847 runs): label 255 (a class
    here) is dropped, void 65535 stays, enters no label area, and its predictions enter the predicted class's area."""
    rng = np.random.default_rng(5)
    classes, void = 300, 65535
    metric = ConfusionMatrix(classes, 255, unlabelled_row=True)
    label = rng.integers(0, classes, (40, 30))
    label[rng.random(label.shape) < 0.25] = void
    label[:3] = 255
    pred = rng.integers(0, classes, label.shape)
    pred[label == 7] = 7
    metric.update(torch.from_numpy(pred), torch.from_numpy(label))
    kept = label != 255  # IoUMetric.intersect_and_union: mask, then histc over [0, classes - 1]
    masked_pred, masked_label = pred[kept], label[kept]
    in_range = masked_label < classes
    intersect = np.bincount(masked_pred[masked_pred == masked_label], minlength=classes)
    area_pred = np.bincount(masked_pred, minlength=classes)
    area_label = np.bincount(masked_label[in_range], minlength=classes)
    union = area_pred + area_label - intersect
    expected = np.where(union > 0, intersect / np.maximum(union, 1), np.nan)
    scores = metric.compute()
    assert metric.matrix.shape == (classes + 1, classes) and int(metric.matrix[classes].sum()) == (label == void).sum()
    assert np.allclose(np.array(scores.iou), expected, atol=1e-12, equal_nan=True)
    assert np.isnan(scores.iou[255]) or scores.iou[255] == 0.0
    assert scores.aacc == pytest.approx(intersect.sum() / area_label.sum(), abs=1e-12)


def test_the_metric_ignore_index_is_a_protocol_setting_in_its_hash():
    from benchmark.errors import ConfigError
    from benchmark.protocol import load_protocol

    plain = load_protocol("ovs5")
    assert all(spec.metric_ignore_index is None for spec in plain.benchmarks.values())
    assert plain.benchmarks["ade847"].ignore_in_metric == 65535
    mmseg = load_protocol("ovs5", {"metric.ignore_index": 255})
    assert mmseg.benchmarks["ade847"].metric_ignore_index == 255
    assert mmseg.benchmarks["context459"].ignore_in_metric == 255
    assert mmseg.benchmarks["voc20"].metric_ignore_index is None  # the card's own value: nothing changes
    assert mmseg.hash != plain.hash
    void = load_protocol("ovs5", {"metric.ignore_index": 65535})  # the 16-bit cards' own value; 255 kept elsewhere
    assert [spec.metric_ignore_index for spec in void.benchmarks.values()] == [None, None, 65535, 65535, 65535]
    with pytest.raises(ConfigError, match=r"ade847: metric: key 'ignore_index' must be a label value \(>= 0\), got -1"):
        load_protocol("ovs5", {"metric.ignore_index": -1})
    with pytest.raises(ConfigError, match=r"ade847: metric: unknown key 'ignore'; allowed: ignore_index"):
        load_protocol("ovs5", {"metric.ignore": 255})
