import math

import pytest
import torch
import yaml

from benchmark.errors import ConfigError
from benchmark.metrics import ConfusionMatrix, split_scores
from benchmark.protocol import list_protocols, load_protocol
from tests.test_runner import records_under, run_cli

SPLIT_PROTOCOLS = ["zs_spnet_voc", "zs_spnet_cocostuff"] + [
    f"zs_zs3net_{data}{n}" for data in ("voc", "context") for n in (2, 4, 6, 8, 10)
]
UNSEEN = {
    "zs_spnet_voc": {"pottedplant", "sheep", "sofa", "train", "tvmonitor"},
    "zs_spnet_cocostuff": {"cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard",
                           "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete"},
    "zs_zs3net_voc10": {"cow", "motorbike", "aeroplane", "sofa", "cat", "tvmonitor", "train", "bottle", "chair",
                        "pottedplant"},
    "zs_zs3net_context10": {"cow", "motorbike", "sofa", "cat", "boat", "fence", "bird", "tvmonitor", "keyboard",
                            "aeroplane"},
}


@pytest.mark.parametrize("name", SPLIT_PROTOCOLS)
def test_split_lists_agree_with_the_cards(name):
    assert name in list_protocols()
    (spec,) = load_protocol(name).benchmarks.values()
    split, classes = spec.split, spec.dataset.classes
    assert set(split.seen).isdisjoint(split.unseen)
    assert sorted(split.seen + split.unseen) == list(range(len(classes)))
    unseen = {classes[k] for k in split.unseen}
    if name in UNSEEN:
        assert unseen == UNSEEN[name]
    if spec.dataset.has_background:
        assert classes.index("background") in split.seen


def test_zs3net_splits_are_cumulative():
    for data in ("voc", "context"):
        previous: set[int] = set()
        for n in (2, 4, 6, 8, 10):
            (spec,) = load_protocol(f"zs_zs3net_{data}{n}").benchmarks.values()
            assert len(spec.split.unseen) == n and previous < set(spec.split.unseen)
            previous = set(spec.split.unseen)


def test_seen_unseen_and_harmonic_mean_on_a_hand_made_matrix():
    # 4 classes; seen 0, 1; unseen 2, 3.  I = diag, U = row + column - I:
    # IoU = [1/2, 2/3, 1/3, 0/2], S = 7/12, U = 1/6.
    matrix = ConfusionMatrix(4)
    matrix.load_state_dict({"matrix": [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0]]})
    iou = matrix.compute().iou
    assert iou == pytest.approx([1 / 2, 2 / 3, 1 / 3, 0.0])
    scores = split_scores(iou, (0, 1), (2, 3))
    assert scores.miou_seen == pytest.approx(7 / 12)
    assert scores.miou_unseen == pytest.approx(1 / 6)
    assert scores.hiou == pytest.approx(2 * (7 / 12) * (1 / 6) / (7 / 12 + 1 / 6))
    assert split_scores([0.0, 0.0], (0,), (1,)).hiou == 0.0
    assert math.isnan(split_scores([0.5, float("nan")], (0,), (1,)).hiou)


def test_bad_split_files_are_clear_errors(tmp_path, toy_world):
    folder = toy_world["protocol"].parent
    (folder / "split.yaml").write_text(yaml.safe_dump({"name": "s", "seen": ["sky", "grass"], "unseen": ["cat"]}))
    protocol = yaml.safe_load(toy_world["protocol"].read_text())
    protocol["benchmarks"]["toyset"]["split"] = {"file": "split.yaml"}
    toy_world["protocol"].write_text(yaml.safe_dump(protocol))
    with pytest.raises(ConfigError, match=r"\['dog'\] .* neither seen nor unseen"):
        load_protocol(toy_world["protocol"])
    (folder / "split.yaml").write_text(
        yaml.safe_dump({"name": "s", "seen": ["sky", "grass", "cat"], "unseen": ["cat", "dog", "cow"]})
    )
    with pytest.raises(ConfigError, match=r"\['cow'\] are not classes"):
        load_protocol(toy_world["protocol"])
    (folder / "split.yaml").write_text(
        yaml.safe_dump({"name": "s", "seen": ["sky", "grass", "cat"], "unseen": ["cat", "dog"]})
    )
    with pytest.raises(ConfigError, match=r"\['cat'\] are both seen and unseen"):
        load_protocol(toy_world["protocol"])


def with_split(world, setting):
    folder = world["protocol"].parent
    (folder / "split.yaml").write_text(yaml.safe_dump({"name": "toysplit", "seen": ["sky", "grass"],
                                                        "unseen": ["cat", "dog"]}))
    protocol = yaml.safe_load(world["protocol"].read_text())
    protocol["benchmarks"]["toyset"]["split"] = {"file": "split.yaml", "setting": setting}
    world["protocol"].write_text(yaml.safe_dump(protocol))


def test_split_run_records_seen_unseen_hiou_and_table_columns(toy_world, capsys):
    with_split(toy_world, "generalised")
    assert run_cli(toy_world, "--benchmarks", "toyset") == 0
    assert "toyset mIoU-S" in capsys.readouterr().out
    (record,) = records_under(toy_world["results"]).values()
    split = record["split"]
    iou = record["per_class_iou"]
    seen = (iou["sky"] + iou["grass"]) / 2
    unseen = (iou["cat"] + iou["dog"]) / 2
    assert split["miou_seen"] == pytest.approx(seen, abs=0.01)
    assert split["miou_unseen"] == pytest.approx(unseen, abs=0.01)
    assert split["hiou"] == pytest.approx(2 * seen * unseen / (seen + unseen), abs=0.02)


def test_unseen_only_scores_unseen_pixels_with_unseen_predictions(toy_world):
    with_split(toy_world, "unseen_only")
    assert run_cli(toy_world, "--benchmarks", "toyset") == 0
    (record,) = records_under(toy_world["results"]).values()
    matrix = torch.tensor(record["confusion_matrix"])
    assert matrix[:2].sum() == 0  # seen-class pixels are not scored
    assert matrix[:, :2].sum() == 0  # nothing is predicted as a seen class
    assert matrix[2:, 2:].sum() > 0


def test_a_method_trained_on_unseen_classes_is_refused(toy_world, capsys, monkeypatch):
    from tests.toy_method import ToyMethod

    with_split(toy_world, "generalised")
    monkeypatch.setattr(ToyMethod, "trained_classes", lambda self: {"sky", "Dog"})
    assert run_cli(toy_world, "--benchmarks", "toyset") == 2
    err = capsys.readouterr().err
    assert "['dog']" in err and "toysplit" in err
    assert not toy_world["results"].exists() or not records_under(toy_world["results"])
