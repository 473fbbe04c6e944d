"""The synthetic open world: determinism, layout, caption/label consistency, cards and protocol."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from benchmark.synthetic import generate_world, render_example, writer
from benchmark.synthetic.captions import names_in_caption
from benchmark.synthetic.examples import CAPTION_SIZE, VAL_LONG_MAX, VAL_SHORT
from benchmark.synthetic.vocabulary import load_vocabulary, parse_vocabulary

REPO = Path(__file__).resolve().parents[1]
SEED = 7
N_CAPTIONS = 40
N_VAL = 6


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "synthetic"
    generate_world(out, SEED, n_captions=N_CAPTIONS, n_val=N_VAL)
    return out


def test_same_seed_same_bytes_any_workers(world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_world(again, SEED, n_captions=N_CAPTIONS, n_val=N_VAL, workers=2)
    assert tree_hashes(again) == tree_hashes(world)


def test_different_seed_different_bytes(world: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    generate_world(other, SEED + 1, n_captions=N_CAPTIONS, n_val=N_VAL)
    reference, hashes = tree_hashes(world), tree_hashes(other)
    assert reference.keys() == hashes.keys()
    different = [k for k in hashes if k.endswith(".png") and hashes[k] != reference[k]]
    assert len(different) == N_CAPTIONS + 3 * N_VAL


def test_rerun_on_complete_folder_writes_nothing(world: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in world.rglob("*")}
    summary = generate_world(world, SEED, n_captions=N_CAPTIONS, n_val=N_VAL)
    assert summary == json.loads((world / "world.json").read_text())
    assert {p: p.stat().st_mtime_ns for p in world.rglob("*")} == before


def test_stale_folder_is_rebuilt(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "stale"
    generate_world(out, SEED + 1, n_captions=N_CAPTIONS + 5, n_val=N_VAL + 2)
    generate_world(out, SEED, n_captions=N_CAPTIONS, n_val=N_VAL)
    assert tree_hashes(out) == tree_hashes(world)


def test_interrupted_build_is_completed(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "partial"

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(writer, "_write_val", interrupted)
        with pytest.raises(KeyboardInterrupt):
            generate_world(out, SEED, n_captions=N_CAPTIONS, n_val=N_VAL)
    assert not (out / "world.json").exists()
    kept = out / "captions" / "images" / "000001.png"
    kept_mtime = kept.stat().st_mtime_ns
    (out / "captions" / "images" / "000005.png").unlink()
    generate_world(out, SEED, n_captions=N_CAPTIONS, n_val=N_VAL)
    assert tree_hashes(out) == tree_hashes(world)
    assert kept.stat().st_mtime_ns == kept_mtime
    assert not any(p.name.startswith(".") for p in out.rglob("*"))


def test_world_json(world: Path) -> None:
    vocab = load_vocabulary()
    summary = json.loads((world / "world.json").read_text())
    assert summary["seed"] == SEED
    assert summary["counts"]["captions"] == N_CAPTIONS and summary["counts"]["val"] == N_VAL
    assert summary["classes"] == vocab.classes and summary["classes_bg"] == vocab.classes_bg
    assert isinstance(summary["version"], int)


def test_caption_split_layout_and_consistency(world: Path) -> None:
    vocab = load_vocabulary()
    records = read_jsonl(world / "captions" / "captions.jsonl")
    assert len(records) == N_CAPTIONS
    for i, record in enumerate(records):
        assert record["image"] == f"images/{i:06d}.png"
        image = Image.open(world / "captions" / record["image"])
        assert image.mode == "RGB" and image.size == (CAPTION_SIZE, CAPTION_SIZE)
        example = render_example(SEED, "captions", i)
        np.testing.assert_array_equal(np.asarray(image), example.image)
        assert record["caption"] == example.caption and record["objects"] == example.objects
        present = [vocab.classes[c] for c in np.unique(example.label)]
        assert record["objects"] == present
        things = {name for name in present if name in {t.name for t in vocab.things}}
        named = names_in_caption(record["caption"], vocab)
        if record["complete"]:
            assert things <= named, (record, things - named)
        else:
            assert not things <= named or not things, record


def test_complete_fraction() -> None:
    vocab = load_vocabulary()
    flags = [render_example(SEED, "captions", i).complete for i in range(200)]
    assert 0.7 < np.mean(flags) < 0.9
    for i in range(20):
        example = render_example(SEED, "captions", i, complete_fraction=0.0)
        things = {vocab.classes[c] for c in np.unique(example.label) if vocab.is_thing(int(c))}
        assert not example.complete and not things <= names_in_caption(example.caption, vocab)
        assert render_example(SEED, "captions", i, complete_fraction=1.0).complete


def test_val_split(world: Path) -> None:
    vocab = load_vocabulary()
    root = world / "val"
    stems = (root / "val.txt").read_text().split()
    assert stems == [f"{i:06d}" for i in range(N_VAL)]
    for stem in stems:
        image = Image.open(root / "images" / f"{stem}.png")
        label_img = Image.open(root / "labels" / f"{stem}.png")
        bg_img = Image.open(root / "labels_bg" / f"{stem}.png")
        assert image.mode == "RGB" and label_img.mode == "L" and bg_img.mode == "L"
        assert image.size == label_img.size == bg_img.size
        assert VAL_SHORT[0] <= min(image.size) <= VAL_SHORT[1] and max(image.size) <= VAL_LONG_MAX
        label, label_bg = np.asarray(label_img), np.asarray(bg_img)
        assert label.max() < len(vocab.classes)
        n_stuff = len(vocab.stuff)
        np.testing.assert_array_equal(label_bg, np.where(label >= n_stuff, label - n_stuff + 1, 0))
        assert label_bg.max() < len(vocab.classes_bg)


def load_yaml(relative: str) -> dict:
    return yaml.safe_load((REPO / relative).read_text())


def test_cards_agree_with_vocabulary() -> None:
    vocab = load_vocabulary()
    default_n_val = inspect.signature(generate_world).parameters["n_val"].default
    for name, ann_dir, classes, has_background in [
        ("synthetic", "labels", vocab.classes, False),
        ("synthetic_bg", "labels_bg", vocab.classes_bg, True),
    ]:
        card = load_yaml(f"datasets/{name}.yaml")
        assert card["name"] == name and card["classes"] == classes
        assert card["root"] == "synthetic/val" and card["img_dir"] == "images" and card["ann_dir"] == ann_dir
        assert card["split"] == "val.txt" and card["num_images"] == default_n_val
        assert card["has_background"] is has_background and card["reduce_zero_label"] is False


def test_class_name_files_agree_with_vocabulary() -> None:
    """Every class is prompted by its own synonyms, canonical name first; synthetic_bg's background (rule
    `names`) by every name `synthetic` gives its stuff classes."""
    from benchmark.protocol import load_protocol

    vocab = load_vocabulary()
    benchmarks = load_protocol("synthetic").benchmarks
    assert benchmarks["synthetic_bg"].background.rule == "names"
    stuff_names, *things_names = benchmarks["synthetic_bg"].class_names
    assert list(stuff_names) == [n for names in benchmarks["synthetic"].class_names[:len(vocab.stuff)] for n in names]
    for class_names, entries in [(benchmarks["synthetic"].class_names, vocab.stuff + vocab.things),
                                 (things_names, vocab.things)]:
        assert len(class_names) == len(entries)
        for names, entry in zip(class_names, entries, strict=True):
            assert names[0] == entry.name and set(names) <= set(entry.synonyms)


def test_protocol_and_cards_load_in_the_engine(world: Path) -> None:
    from benchmark.data import check_dataset, load_card
    from benchmark.protocol import load_protocol

    protocol = load_protocol("synthetic")
    assert list(protocol.benchmarks) == ["synthetic", "synthetic_bg"]
    data_root = world.parent
    for name in ("synthetic", "synthetic_bg"):
        card = load_card(name)
        check = check_dataset(card, data_root, read_files=True)
        assert check.found == N_VAL and not check.missing and not check.unreadable


def test_generate_world_leaves_no_temporary_files(world: Path) -> None:
    leftovers = [p for p in world.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
    assert sorted(os.listdir(world)) == ["captions", "val", "world.json"]


@pytest.mark.parametrize("key, value", [("colour", "mauve"), ("pattern", None)])
def test_a_thing_without_a_known_colour_or_a_pattern_is_refused(key: str, value: object) -> None:
    raw = yaml.safe_load((REPO / "benchmark" / "synthetic" / "vocabulary.yaml").read_text())
    raw["things"][2][key] = value
    with pytest.raises(ValueError, match=r"thing 'triangle' needs a `pattern` and a `colour`"):
        parse_vocabulary(raw)
