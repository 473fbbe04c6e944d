import shutil

import pytest

from benchmark.errors import ConfigError
from benchmark.paths import PROTOCOLS_DIR
from benchmark.protocol import load_protocol, split_names

TCL9 = [
    "itap of a {}.", "a bad photo of a {}.", "a origami {}.", "a photo of the large {}.", "a {} in a video game.",
    "art of the {}.", "a photo of the small {}.", "a photo of many {}.", "a photo of {}s.",
]


def test_tcl8_is_the_unified_protocol():
    protocol = load_protocol("tcl8")
    assert list(protocol.benchmarks) == [
        "voc21", "context60", "coco_object", "voc20", "context59", "coco_stuff171", "cityscapes", "ade20k"
    ]
    assert list(protocol.text.templates) == TCL9
    assert protocol.text.aggregation == "mean_unnormalised" and protocol.precision == "fp32"
    for name, spec in protocol.benchmarks.items():
        assert (spec.image.resize_short, spec.image.resize_long_max) == (448, 2048)
        assert spec.image.mean == (123.675, 116.28, 103.53) and spec.image.std == (58.395, 57.12, 57.375)
        assert (spec.inference.mode, spec.inference.crop, spec.inference.stride) == ("slide", 448, 224)
        expected_rule = "threshold" if name in {"voc21", "context60", "coco_object"} else "none"
        assert spec.background.rule == expected_rule
    assert protocol.benchmarks["ade20k"].class_names[7] == ("bed ",)


def copy_tcl8(tmp_path):
    target = tmp_path / "protocols"
    shutil.copytree(PROTOCOLS_DIR, target)
    return target


def test_hash_is_stable_ignores_file_names_and_follows_content(tmp_path):
    reference = load_protocol("tcl8").hash
    folder = copy_tcl8(tmp_path)
    assert load_protocol(folder / "tcl8.yaml").hash == reference
    (folder / "templates" / "tcl9.txt").rename(folder / "templates" / "renamed.txt")
    text = (folder / "tcl8.yaml").read_text().replace("templates/tcl9.txt", "templates/renamed.txt")
    (folder / "tcl8.yaml").write_text(text)
    assert load_protocol(folder / "tcl8.yaml").hash == reference
    templates = folder / "templates" / "renamed.txt"
    templates.write_text(templates.read_text().replace("itap of a {}.", "itap of the {}."))
    assert load_protocol(folder / "tcl8.yaml").hash != reference


def test_wrong_class_count_names_the_file(tmp_path):
    folder = copy_tcl8(tmp_path)
    names = folder / "classnames" / "tcl" / "voc20.txt"
    names.write_text("\n".join(names.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(ConfigError, match=r"voc20\.txt: 19 class lines.*needs 20"):
        load_protocol(folder / "tcl8.yaml")


def test_bad_yaml_unknown_key_and_escaping_paths_are_clear_errors(tmp_path):
    folder = copy_tcl8(tmp_path)
    path = folder / "tcl8.yaml"
    original = path.read_text()
    path.write_text(original.replace("precision: fp32", "precision: [fp32"))
    with pytest.raises(ConfigError, match=r"tcl8\.yaml: line \d+"):
        load_protocol(path)
    path.write_text(original.replace("precision: fp32", "precision: fp32\nresolution: 448"))
    with pytest.raises(ConfigError, match="unknown key 'resolution'"):
        load_protocol(path)
    path.write_text(original.replace("templates: templates/tcl9.txt", "templates: ../../../etc/passwd"))
    with pytest.raises(ConfigError, match="leaves its folder"):
        load_protocol(path)
    path.write_text(original.replace("crop: 448", "crop: -1"))
    with pytest.raises(ConfigError, match="positive 'crop'"):
        load_protocol(path)


def test_class_name_lines_split_synonyms_and_keep_quoted_names():
    assert split_names("person, person in shirt ,man") == ["person", "person in shirt", "man"]
    assert split_names('"bed "') == ["bed "]
    assert split_names('"a, b", c') == ["a, b", "c"]
