import json
import math

import numpy as np
import pytest
import torch

from benchmark.metrics import ConfusionMatrix


def brute_force(preds, labels, num_classes, ignore):
    """mmseg IoUMetric, computed class by class with plain numpy."""
    inter = np.zeros(num_classes)
    area_pred = np.zeros(num_classes)
    area_label = np.zeros(num_classes)
    for pred, label in zip(preds, labels, strict=True):
        valid = label != ignore
        for c in range(num_classes):
            inter[c] += np.sum((pred == c) & (label == c) & valid)
            area_pred[c] += np.sum((pred == c) & valid)
            area_label[c] += np.sum((label == c) & valid)
    union = area_pred + area_label - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
        acc = inter / area_label
    return iou, acc, np.nanmean(iou), np.nanmean(acc), inter.sum() / area_label.sum()


def test_confusion_matrix_matches_brute_force_with_ignore_and_absent_classes():
    rng = np.random.default_rng(0)
    num_classes, ignore = 7, 255
    preds, labels = [], []
    matrix = ConfusionMatrix(num_classes, ignore)
    for _ in range(5):
        shape = tuple(rng.integers(5, 30, 2))
        label = rng.choice([0, 1, 2, 4, ignore], size=shape)  # 3, 5, 6 never in labels
        pred = rng.choice([0, 1, 2, 3, 4], size=shape)  # 5, 6 never predicted: IoU NaN
        preds.append(pred)
        labels.append(label)
        matrix.update(torch.from_numpy(pred), torch.from_numpy(label))
    scores = matrix.compute()
    iou, acc, miou, macc, aacc = brute_force(preds, labels, num_classes, ignore)
    np.testing.assert_allclose(scores.iou, iou, equal_nan=True)
    np.testing.assert_allclose(scores.acc, acc, equal_nan=True)
    assert math.isnan(scores.iou[5]) and math.isnan(scores.iou[6])
    assert scores.iou[3] == 0.0  # predicted, never labelled
    assert math.isclose(scores.miou, miou) and math.isclose(scores.macc, macc) and math.isclose(scores.aacc, aacc)


def test_ignored_pixels_do_not_count_as_predictions():
    matrix = ConfusionMatrix(2, 255)
    matrix.update(torch.tensor([1, 1, 0]), torch.tensor([255, 1, 0]))
    assert matrix.matrix.tolist() == [[1, 0], [0, 1]]
    assert matrix.compute().miou == 1.0


def test_the_metric_owns_its_state_save_resume_and_reset():
    first = ConfusionMatrix(3, 255)
    first.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 255]))
    state = first.state_dict()
    assert state == {"matrix": [[1, 0, 0], [0, 0, 0], [0, 1, 1]]}
    resumed = ConfusionMatrix(3, 255)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # what a saved partial state holds
    resumed.update(torch.tensor([1]), torch.tensor([1]))
    first.update(torch.tensor([1]), torch.tensor([1]))
    assert torch.equal(resumed.matrix, first.matrix)
    with pytest.raises(ValueError, match="does not fit"):
        ConfusionMatrix(4).load_state_dict(state)
    resumed.reset()
    assert resumed.matrix.sum() == 0 and resumed.matrix.shape == (3, 3)
