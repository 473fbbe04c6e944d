import numpy as np
import pytest
from PIL import Image

from benchmark.data import BenchmarkDataset, check_dataset, list_samples, load_card, read_image, read_label
from benchmark.errors import ConfigError, DataError
from tests.fakedata import write_fake_dataset

EIGHT = {
    "voc21": (21, 1449), "voc20": (20, 1449), "context60": (60, 5105), "context59": (59, 5105),
    "coco_object": (81, 5000), "coco_stuff171": (171, 5000), "cityscapes": (19, 500), "ade20k": (150, 2000),
}


@pytest.mark.parametrize("name", sorted(EIGHT))
def test_cards_of_the_unified_protocol(name):
    card = load_card(name)
    assert (card.num_classes, card.num_images) == EIGHT[name]
    assert card.ignore_index == 255


def test_card_pairs_share_files_and_names():
    voc21, voc20 = load_card("voc21"), load_card("voc20")
    assert voc20.classes == voc21.classes[1:] and voc20.reduce_zero_label and not voc21.reduce_zero_label
    context60, context59 = load_card("context60"), load_card("context59")
    assert context59.classes == context60.classes[1:]
    assert load_card("coco_object").classes[1:] == load_card("coco_stuff171").classes[:80]


@pytest.mark.parametrize("name", sorted(EIGHT))
def test_fake_dataset_in_card_layout_is_found_and_decoded(tmp_path, name):
    card = load_card(name)
    stems = write_fake_dataset(card, tmp_path, count=3)
    samples = list_samples(card, tmp_path)
    assert sorted(s.stem for s in samples) == sorted(stems)
    check = check_dataset(card, tmp_path, read_files=True)
    assert (check.status, check.found, check.expected) == ("incomplete", 3, card.num_images)
    for sample in samples:
        image, label = read_image(sample.image), read_label(sample.label, card)
        assert image.shape[:2] == label.shape and image.dtype == np.uint8
        assert set(np.unique(label)) <= set(range(card.num_classes)) | {255}


def test_dataset_items_carry_the_decoded_image_only_when_asked(tmp_path):
    card = load_card("voc21")
    write_fake_dataset(card, tmp_path, count=1)
    samples = list_samples(card, tmp_path)
    plain = BenchmarkDataset(card, samples, [0], lambda image: image[:2])[0]
    kept = BenchmarkDataset(card, samples, [0], lambda image: image[:2], keep_original=True)[0]
    assert "original" not in plain
    assert np.array_equal(kept["original"].numpy(), read_image(samples[0].image))


def test_missing_dataset_is_reported_with_remedy(tmp_path):
    check = check_dataset(load_card("ade20k"), tmp_path)
    assert check.status == "missing" and "datasets/README.md" in check.remedy


def test_reduce_zero_label_maps_zero_to_ignore_and_shifts(tmp_path):
    card = load_card("voc20")
    path = tmp_path / "l.png"
    Image.fromarray(np.array([[0, 1, 20, 255]], np.uint8)).save(path)
    assert read_label(path, card).tolist() == [[255, 0, 19, 255]]


def test_palette_label_is_read_as_indices_not_colours(tmp_path):
    card = load_card("voc21")
    label = np.array([[0, 5, 20, 255]], np.uint8)
    image = Image.fromarray(label, mode="L").convert("P")
    image.putpalette([255 - (i % 256) for i in range(768)])
    image.save(tmp_path / "p.png")
    assert read_label(tmp_path / "p.png", card).tolist() == label.tolist()


def test_rgb_label_is_refused_with_remedy(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"rgb\.png.*index PNG"):
        read_label(tmp_path / "rgb.png", load_card("voc21"))


def test_label_values_outside_the_classes_are_refused(tmp_path):
    Image.fromarray(np.array([[3, 21, 40]], np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"bad\.png.*\[21, 40\]"):
        read_label(tmp_path / "bad.png", load_card("voc21"))


def test_corrupt_and_empty_images_are_refused(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=r"empty\.jpg.*0 bytes"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(DataError, match=r"junk\.jpg.*cannot be decoded"):
        read_image(tmp_path / "junk.jpg")


def test_bad_card_yaml_names_file_and_line(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\nclasses: [a, b\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+"):
        load_card(tmp_path / "broken.yaml")
    (tmp_path / "extra.yaml").write_text(
        "name: extra\nroot: x\nimg_dir: i\nann_dir: a\nimg_suffix: .png\nseg_map_suffix: .png\n"
        "num_images: 1\nclasses: [a]\ncolour: red\n"
    )
    with pytest.raises(ConfigError, match=r"extra\.yaml: unknown key 'colour'"):
        load_card(tmp_path / "extra.yaml")


def test_card_paths_may_not_leave_the_data_root(tmp_path):
    (tmp_path / "escape.yaml").write_text(
        "name: escape\nroot: ../../etc\nimg_dir: i\nann_dir: a\nimg_suffix: .png\nseg_map_suffix: .png\n"
        "num_images: 1\nclasses: [a]\n"
    )
    with pytest.raises(ConfigError, match="relative path inside the data root"):
        load_card(tmp_path / "escape.yaml")


def test_truncated_jpeg_is_refused_whatever_the_opencv_version(tmp_path):
    import cv2

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    truncated = encoded.tobytes()[: len(encoded) * 2 // 3]
    (tmp_path / "cut.jpg").write_bytes(truncated)
    with pytest.raises(DataError, match=r"cut\.jpg: JPEG is truncated"):
        read_image(tmp_path / "cut.jpg")
    (tmp_path / "whole.jpg").write_bytes(encoded.tobytes())
    assert read_image(tmp_path / "whole.jpg").shape == (64, 64, 3)


def test_zero_byte_label_is_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png"):
        read_label(tmp_path / "empty.png", load_card("voc21"))
