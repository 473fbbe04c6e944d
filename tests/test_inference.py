from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch

from benchmark.inference import (
    PreparedImage,
    ScoreHead,
    SlidingWindowPredictor,
    apply_background,
    class_scores,
    rescale_size,
    resize_image,
    slide_windows,
)
from benchmark.protocol import BackgroundSpec, BenchmarkSpec, ImageSpec, InferenceSpec
from tests.factories import make_text
from tests.toy_method import ToyMethod


def mmcv_size(width, height, short, long_max):
    """mmcv rescale_size written with exact fractions: factor = min(long/long side, short/short side)."""
    factor = min(Fraction(long_max, max(width, height)), Fraction(short, min(width, height)))
    return int(float(width * factor) + 0.5), int(float(height * factor) + 0.5)


@pytest.mark.parametrize(
    "width,height,expected",
    [
        (2048, 1024, (896, 448)),  # Cityscapes at short 448
        (500, 375, (597, 448)),  # a VOC image
        (683, 512, (598, 448)),  # ADE20K-like: 597.625 rounds up
        (4000, 500, (2048, 256)),  # long side capped at 2048
        (448, 448, (448, 448)),
        (300, 200, (672, 448)),  # up-scaled
    ],
)
def test_rescale_size_known_cases(width, height, expected):
    assert rescale_size(width, height, 448, 2048) == expected


def test_rescale_size_matches_formula_on_random_sizes():
    rng = np.random.default_rng(0)
    for width, height in rng.integers(16, 3000, size=(500, 2)):
        assert rescale_size(int(width), int(height), 448, 2048) == mmcv_size(int(width), int(height), 448, 2048)


def test_resize_image_is_opencv_bilinear_on_uint8():
    image = np.random.default_rng(1).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    spec = ImageSpec(448, 2048, (0, 0, 0), (1, 1, 1))
    resized = resize_image(image, spec)
    assert resized.shape == (448, 597, 3) and resized.dtype == np.uint8
    assert np.array_equal(resized, cv2.resize(image, (597, 448), interpolation=cv2.INTER_LINEAR))


@pytest.mark.parametrize(
    "size,expected",
    [
        (300, [(0, 300)]),  # smaller than the crop: one window, the whole side
        (448, [(0, 448)]),  # equal
        (500, [(0, 448), (52, 500)]),  # larger: the last window is pulled back to end at the border
        (1000, [(0, 448), (224, 672), (448, 896), (552, 1000)]),
        (672, [(0, 448), (224, 672)]),
    ],
)
def test_slide_windows_follow_mmseg(size, expected):
    windows = slide_windows(size, size, crop=448, stride=224)
    rows = sorted({(y1, y2) for y1, y2, _, _ in windows})
    cols = sorted({(x1, x2) for _, _, x1, x2 in windows})
    assert rows == expected and cols == expected
    assert len(windows) == len(expected) ** 2


def test_slide_windows_cover_every_pixel_non_square():
    windows = slide_windows(700, 1311, crop=448, stride=224)
    count = np.zeros((700, 1311), int)
    for y1, y2, x1, x2 in windows:
        assert y2 - y1 == 448 and x2 - x1 == 448
        count[y1:y2, x1:x2] += 1
    assert count.min() >= 1


NO_BACKGROUND = BackgroundSpec("none")


def make_spec(names, background=NO_BACKGROUND, mode="slide", crop=16, stride=8, card=None):
    return BenchmarkSpec(
        name="bench", dataset=card, class_names=tuple(tuple(n) for n in names),
        image=ImageSpec(None, None, (0, 0, 0), (1, 1, 1)), inference=InferenceSpec(mode, crop, stride),
        background=background,
    )


def run_predictor(method, spec, images, batch_size):
    bank = method.encode_classes([list(s) for s in spec.class_names], make_text())
    predictor = SlidingWindowPredictor(method, [ScoreHead(spec, bank, None)], batch_size=batch_size)
    out = []
    for i, image in enumerate(images):
        label = torch.zeros(image.shape[1:], dtype=torch.int64)
        out.extend(predictor.push(PreparedImage(i, str(i), image, label)))
    out.extend(predictor.flush())
    return out


def test_batched_results_equal_one_crop_at_a_time():
    generator = torch.Generator().manual_seed(0)
    images = [torch.randn(3, h, w, generator=generator) for h, w in [(20, 37), (16, 16), (9, 30), (33, 21)]]
    spec = make_spec([["a"], ["b", "b2"], ["c"], ["d"]])
    single = run_predictor(ToyMethod(), spec, images, batch_size=1)
    for batch_size in (2, 5, 64):
        batched = run_predictor(ToyMethod(), spec, images, batch_size=batch_size)
        assert [p.item.index for p in batched] == [0, 1, 2, 3]
        for a, b in zip(single, batched, strict=True):
            assert torch.equal(a.pred, b.pred)


def test_stitching_averages_overlaps_against_a_direct_computation():
    """One image, toy scores: the engine's stitched scores equal a hand-built window average."""
    image = torch.randn(3, 20, 28, generator=torch.Generator().manual_seed(3))
    spec = make_spec([["a"], ["b"], ["c"]], crop=16, stride=8)
    method = ToyMethod()
    bank = method.encode_classes([["a"], ["b"], ["c"]], make_text())
    total = torch.zeros(3, 20, 28)
    count = torch.zeros(20, 28)
    for y1, y2, x1, x2 in slide_windows(20, 28, 16, 8):
        scores = method.predict_masks(image[None, :, y1:y2, x1:x2], bank)
        scores = torch.nn.functional.interpolate(scores, size=(y2 - y1, x2 - x1), mode="bilinear")
        total[:, y1:y2, x1:x2] += scores[0]
        count[y1:y2, x1:x2] += 1
    expected = (total / count).softmax(0).argmax(0)
    (prediction,) = run_predictor(ToyMethod(), spec, [image], batch_size=3)
    assert torch.equal(prediction.pred, expected)


def test_whole_mode_runs_one_crop_per_image():
    method = ToyMethod()
    spec = make_spec([["a"], ["b"]], mode="whole", crop=None, stride=None)
    run_predictor(method, spec, [torch.randn(3, 40, 50), torch.randn(3, 8, 9)], batch_size=4)
    assert method.calls == 2


def test_synonyms_softmax_over_all_names_then_max():
    logits = torch.tensor([1.0, 2.0, 0.5, 3.0]).reshape(4, 1, 1)
    spec = make_spec([["a"], ["b1", "b2", "b3"]])
    probs = class_scores(logits, spec, "logits")
    softmax = torch.softmax(torch.tensor([1.0, 2.0, 0.5, 3.0]), 0)
    assert torch.allclose(probs[:, 0, 0], torch.stack([softmax[0], softmax[1:].max()]))


def test_threshold_rule_puts_a_constant_channel_in_front():
    probs = torch.tensor([[0.6, 0.2, 0.45], [0.3, 0.1, 0.5]]).reshape(2, 1, 3)
    pred = apply_background(probs, BackgroundSpec("threshold"), 0.4)
    assert pred.tolist() == [[1, 0, 2]]


def test_prob_thd_rule_sets_low_confidence_pixels_to_class_zero():
    probs = torch.tensor([[0.2, 0.5, 0.1], [0.5, 0.45, 0.2], [0.3, 0.05, 0.7]]).reshape(3, 1, 3)
    pred = apply_background(probs, BackgroundSpec("prob_thd"), 0.49)
    assert pred.tolist() == [[1, 0, 2]]


def test_area_thd_suppresses_small_classes_as_sclip_does():
    # 10 pixels: class 1 wins 7, class 2 wins 1, class 0 wins 2; class 2 has 1/8 of the non-background area.
    probs = torch.zeros(3, 1, 10)
    probs[1, 0, :7] = 0.9
    probs[0, 0, 7:9] = 0.9
    probs[2, 0, 9] = 0.6
    probs[0, 0, 9] = 0.3
    probs[1, 0, 9] = 0.1
    kept = apply_background(probs, BackgroundSpec("names", area_thd=0.1), None)
    assert kept[0, 9] == 2
    suppressed = apply_background(probs, BackgroundSpec("names", area_thd=0.2), None)
    assert suppressed[0, 9] == 0  # class 2 zeroed; background beats class 1 on that pixel


def test_nan_scores_stop_the_run_naming_method_benchmark_and_image():
    from benchmark.errors import NumericalError

    spec = make_spec([["a"], ["b"]])
    with pytest.raises(NumericalError, match=r"'toy'.*'bench'.*\['0'\]"):
        run_predictor(ToyMethod(nan_after=0), spec, [torch.randn(3, 16, 16)], batch_size=1)


class OnceUpsampled(ToyMethod):
    """The toy scores at half resolution, upsampled by the engine in one step under mode whole."""

    single_upsample = True


def test_single_upsample_goes_from_the_method_grid_to_the_label_size_in_one_step():
    image = torch.randn(3, 21, 30, generator=torch.Generator().manual_seed(4))
    label_size = (45, 61)
    spec = make_spec([["a"], ["b"], ["c"]], mode="whole", crop=None, stride=None)
    method = OnceUpsampled()
    bank = method.encode_classes([["a"], ["b"], ["c"]], make_text())
    native = method.predict_masks(image[None], bank)
    once = torch.nn.functional.interpolate(native, size=label_size, mode="bilinear", align_corners=False)
    twice = torch.nn.functional.interpolate(native, size=(21, 30), mode="bilinear", align_corners=False)
    twice = torch.nn.functional.interpolate(twice, size=label_size, mode="bilinear", align_corners=False)
    assert not torch.equal(once[0].softmax(0).argmax(0), twice[0].softmax(0).argmax(0))  # the test can tell
    for runner, expected in ((method, once), (ToyMethod(), twice)):  # the flag, then mmseg's two steps without it
        predictor = SlidingWindowPredictor(runner, [ScoreHead(spec, bank, None)], batch_size=2)
        item = PreparedImage(0, "0", image, torch.zeros(label_size, dtype=torch.int64))
        (prediction,) = [*predictor.push(item), *predictor.flush()]
        assert torch.equal(prediction.pred, expected[0].softmax(0).argmax(0))


class LabelRefiner(ToyMethod):
    """Records what refine_labels receives, and turns every label 1 into 2."""

    def encode_image(self, image):
        return ("context of", tuple(image.shape))

    def predict_masks(self, crops, bank, contexts=None):
        return super().predict_masks(crops, bank)

    def refine_labels(self, probs, labels, context):
        self.seen = (probs.clone(), labels.clone(), context)
        return torch.where(labels == 1, 2, labels)


@pytest.mark.parametrize("rule,value", [("threshold", 0.4), ("prob_thd", 0.4), ("none", None)])
def test_refine_labels_gets_the_probabilities_its_labels_are_the_argmax_of(rule, value):
    image = torch.randn(3, 12, 14, generator=torch.Generator().manual_seed(5))
    names = [["a"], ["b"], ["c"]]
    spec = make_spec(names, background=BackgroundSpec(rule), mode="whole", crop=None, stride=None)
    method = LabelRefiner()
    bank = method.encode_classes(names, make_text())
    predictor = SlidingWindowPredictor(method, [ScoreHead(spec, bank, value)], batch_size=1)
    (prediction,) = [*predictor.push(PreparedImage(0, "0", image, torch.zeros(12, 14, dtype=torch.int64))),
                     *predictor.flush()]
    probs, labels, context = method.seen
    scores = torch.nn.functional.interpolate(method.predict_masks(image[None], bank), size=(12, 14), mode="bilinear",
                                             align_corners=False)[0]
    expected_probs = scores.softmax(0)
    if rule == "threshold":
        expected_probs = torch.cat([torch.full_like(expected_probs[:1], value), expected_probs])
    assert context == ("context of", (3, 12, 14))
    assert torch.allclose(probs, expected_probs)
    assert torch.equal(labels, apply_background(scores.softmax(0), BackgroundSpec(rule), value))
    assert (labels == 1).any() and torch.equal(prediction.pred, torch.where(labels == 1, 2, labels))


class OriginalReader(LabelRefiner):
    needs_original_image = True

    def encode_image(self, image, original=None, stem=None):
        self.original, self.stem = original, stem
        return "context"


def test_encode_image_gets_the_decoded_image_only_where_the_method_asks():
    image = torch.randn(3, 12, 14)
    original = torch.randint(0, 256, (6, 7, 3), dtype=torch.uint8)
    spec = make_spec([["a"], ["b"]], mode="whole", crop=None, stride=None)
    for method, expected in ((OriginalReader(), original), (LabelRefiner(), None)):
        bank = method.encode_classes([["a"], ["b"]], make_text())
        predictor = SlidingWindowPredictor(method, [ScoreHead(spec, bank, None)], batch_size=1)
        item = PreparedImage(0, "0", image, torch.zeros(6, 7, dtype=torch.int64), original=original)
        [*predictor.push(item), *predictor.flush()]  # LabelRefiner.encode_image takes no `original`: not passed
        assert getattr(method, "original", None) is expected
