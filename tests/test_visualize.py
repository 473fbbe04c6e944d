import numpy as np
import pytest
from PIL import Image

from benchmark.cli import main
from benchmark.visualize import (
    GAP,
    IGNORE_COLOUR,
    colourise,
    example_path,
    palette,
    parse_classes,
    predict_image,
    save_examples,
)


def test_palette_is_distinct_and_black_only_for_background():
    with_background = palette(["background", "cat", "dog"])
    assert tuple(with_background[0]) == (0, 0, 0)
    plain = palette(["sky", "grass", "cat", "dog"])
    assert (0, 0, 0) not in {tuple(c) for c in plain}
    assert len({tuple(c) for c in palette([f"c{k}" for k in range(150)])}) == 150


def test_save_examples_puts_image_ground_truth_and_prediction_side_by_side(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (40, 60))
    label[:5] = 255
    prediction = rng.integers(0, 3, (40, 60))
    names = ["background", "cat", "dog"]
    out = save_examples(image, label, prediction, names, tmp_path / "a" / "x.png", height=None)
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape[1] == 3 * 60 + 2 * GAP and picture.shape[0] > 40  # the legend sits below
    assert (picture[:40, :60] == image).all()
    assert (picture[:40, 60 + GAP:120 + GAP] == colourise(label, palette(names))).all()
    assert tuple(picture[0, 60 + GAP]) == IGNORE_COLOUR
    assert (picture[:40, 120 + 2 * GAP:] == colourise(prediction, palette(names))).all()
    scaled = np.asarray(Image.open(save_examples(image, label, prediction, names, tmp_path / "y.png", height=80)))
    assert scaled.shape[1] == 3 * 120 + 2 * GAP
    with pytest.raises(ValueError, match="sizes differ"):
        save_examples(image, label[:10], prediction, names, tmp_path / "z.png")


def test_class_list_parsing():
    assert parse_classes("cat, dog|puppy ,,grass") == [["cat"], ["dog", "puppy"], ["grass"]]


def test_predict_writes_an_overlay_with_a_legend(toy_world, tmp_path, capsys):
    image = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    out = tmp_path / "overlay.png"
    args = ["predict", "--method", "tests.toy_method:ToyMethod", "--image", str(tmp_path / "in.png"),
            "--classes", "sky,grass|lawn,cat", "--out", str(out), "--protocol", str(toy_world["protocol"])]
    assert main(args) == 0
    with Image.open(out) as overlay:
        assert overlay.width == 70 and overlay.height > 50
    assert main([*args, "--threshold", "0.3", "--benchmark", "toyset_bg"]) == 0
    assert "wrote" in capsys.readouterr().out


def test_predict_image_goes_through_the_engine(toy_world):
    from benchmark.protocol import load_protocol
    from tests.toy_method import ToyMethod

    image = np.random.default_rng(2).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    protocol = load_protocol(toy_world["protocol"])
    prediction, names = predict_image(ToyMethod(), protocol, image, [["sky"], ["cat", "kitten"]])
    assert prediction.shape == (33, 47) and names == ["sky", "cat"] and set(np.unique(prediction)) <= {0, 1}
    prediction, names = predict_image(ToyMethod(), protocol, image, [["sky"], ["cat"]], threshold=0.99)
    assert names == ["background", "sky", "cat"] and set(np.unique(prediction)) <= {0, 1, 2}


def test_saved_examples_appear_in_the_html_page(toy_world, tmp_path):
    from tests.test_runner import run_cli

    assert run_cli(toy_world, "--benchmarks", "toyset") == 0
    (record,) = toy_world["results"].rglob("toyset.json")
    image = np.full((20, 30, 3), 128, np.uint8)
    label = np.zeros((20, 30), np.int64)
    save_examples(image, label, label, ["sky", "grass", "cat", "dog"], example_path(record.parent, "toyset", "a/b"))
    page = tmp_path / "board.html"
    assert main(["leaderboard", "--results", str(toy_world["results"]), "--out", str(page)]) == 0
    content = page.read_text()
    assert "Examples: toy on toyset" in content and "data:image/png;base64," in content and "a__b" in content
