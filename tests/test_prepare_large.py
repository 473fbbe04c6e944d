"""`zsbench prepare ade847` and `zsbench prepare context459` on miniature official downloads in their formats.

Every expected label is painted here by hand (rectangles of known trainIds); where the preparation resizes, the
rectangles' edges are carried to the new size by hand with the nearest-neighbour rule
(destination pixel x takes source pixel floor(x * source / destination)).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import yaml
from PIL import Image

from benchmark.data import check_dataset, load_card
from benchmark.errors import DataError
from benchmark.prepare import get_preparer, prepare_dataset
from benchmark.prepare.archive import SourceSpec, close_sources, open_source
from benchmark.prepare.staging import STAGING_DIR
from tests.test_prepare import tree, write_tar, write_zip

VOID = 65535


def random_jpeg(height: int, width: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}


def read_tif(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "TIFF" and image.mode == "I;16"
        return np.array(image)


# ---------------------------------------------------------------- ADE20K-Full (ade847)

ADE = "ADE20K_2021_17_01/"
STREET = f"{ADE}images/ADE/validation/urban/street"
KITCHEN = f"{ADE}images/ADE/validation/home/kitchen"
TRAINING = f"{ADE}images/ADE/training/urban/street"
# ADE20K-Full object ids and their trainIds, copied by hand from CAT-Seg's ADE20K_SEM_SEG_FULL_CATEGORIES
WALL, BUILDING, SKY, AIRPLANE, ADDING_MACHINE = (2978, 0), (312, 1), (2420, 2), (14, 94), (3148, 846)
NOT_AMONG_847 = (0, 1, 5000)  # unlabelled, an ADE20K object outside the 847, a value no object has


def paint(seg: np.ndarray, object_id: int, rows: slice, cols: slice, tens: int = 5) -> None:
    """Writes object_id as ADE20K's *_seg.png encode it: R // 10 = id // 256 (R's units are noise), G = id % 256."""
    seg[rows, cols, 0] = object_id // 256 * 10 + tens
    seg[rows, cols, 1] = object_id % 256
    seg[rows, cols, 2] = 77  # instance channel, ignored


def ade_downloads(folder: Path) -> dict[str, np.ndarray]:
    """ADE20K_2021_17_01.zip in miniature; returns each validation image's expected label, by hand."""
    members: dict[str, bytes] = {}

    # 520x530: short side above 512, shrunk to 512x522 (522 = round(530 / 520 * 512))
    large = np.zeros((520, 530, 3), dtype=np.uint8)
    paint(large, WALL[0], slice(0, 131), slice(None), tens=9)
    paint(large, BUILDING[0], slice(131, None), slice(0, 200), tens=0)
    paint(large, 5000, slice(131, 300), slice(400, None))
    paint(large, ADDING_MACHINE[0], slice(300, None), slice(400, None))
    # rows: destination y keeps source row floor(y * 520 / 512): source 131 starts at y = 129, 300 at y = 296;
    # columns: floor(x * 530 / 522): source 200 starts at x = 197, 400 at x = 394
    expected_large = np.full((512, 522), VOID, dtype=np.uint16)
    expected_large[:129, :] = WALL[1]
    expected_large[129:, :197] = BUILDING[1]
    expected_large[296:, 394:] = ADDING_MACHINE[1]

    # 40x600: long side above 512, short side not: kept at its size
    wide = np.zeros((40, 600, 3), dtype=np.uint8)
    paint(wide, AIRPLANE[0], slice(None), slice(0, 300))
    paint(wide, SKY[0], slice(None), slice(300, None), tens=3)
    paint(wide, 1, slice(0, 10), slice(500, None))
    expected_wide = np.full((40, 600), VOID, dtype=np.uint16)
    expected_wide[:, :300] = AIRPLANE[1]
    expected_wide[:, 300:] = SKY[1]
    expected_wide[:10, 500:] = VOID

    small = np.zeros((30, 20, 3), dtype=np.uint8)
    paint(small, WALL[0], slice(None), slice(None))
    small[5, 5] = (255, 255, 0)  # class value 25 * 256 + 255, the largest a mask can hold
    expected_small = np.zeros((30, 20), dtype=np.uint16)
    expected_small[5, 5] = VOID

    for folder_name, stem, seg, seed in ((STREET, "ADE_val_00000001", large, 1), (KITCHEN, "ADE_val_00000002", wide, 2),
                                         (STREET, "ADE_val_00000003", small, 3)):
        members[f"{folder_name}/{stem}.jpg"] = random_jpeg(*seg.shape[:2], seed=seed)
        members[f"{folder_name}/{stem}_seg.png"] = png_bytes(seg)
        members[f"{folder_name}/{stem}.json"] = b"{}"
        members[f"{folder_name}/{stem}_parts_1.png"] = png_bytes(seg)
    members[f"{TRAINING}/ADE_train_00000001.jpg"] = random_jpeg(8, 8, seed=4)
    members[f"{TRAINING}/ADE_train_00000001_seg.png"] = png_bytes(small[:8, :8])
    members[f"{STREET}/ADE_val_00000099.jpg"] = random_jpeg(8, 8, seed=5)  # in the zip, not in the index
    members[f"{STREET}/ADE_val_00000099_seg.png"] = png_bytes(small[:8, :8])
    members[f"{ADE}objects.txt"] = b"objects\n"
    index = {
        "filename": ["ADE_train_00000001.jpg", "ADE_val_00000001.jpg", "ADE_val_00000002.jpg", "ADE_val_00000003.jpg"],
        "folder": [TRAINING, STREET, KITCHEN, STREET],
        "objectnames": ["wall", "building, edifice"],
        "objectPresence": np.arange(8, dtype=np.int16).reshape(2, 4),
        "scene": np.array(["street", "street", "kitchen", "street"], dtype=object),
        "description": {"folder": "where the image is"},
    }
    members[f"{ADE}index_ade20k.pkl"] = pickle.dumps(index, protocol=4)
    write_zip(folder / "ADE20K_2021_17_01.zip", members)
    return {"ADE_val_00000001": expected_large, "ADE_val_00000002": expected_wide, "ADE_val_00000003": expected_small}


def catseg_jpeg(original: bytes, size: tuple[int, int] | None) -> bytes:
    """What CAT-Seg writes for an image: decoded by PIL, OpenCV-bilinear to (height, width), PIL's default JPEG."""
    pixels = np.asarray(Image.open(io.BytesIO(original)))
    if size is not None:
        pixels = cv2.resize(pixels, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_ade847_validation_images_and_labels_as_catseg_writes_them(tmp_path: Path) -> None:
    expected = ade_downloads(tmp_path / "downloads")
    data = tmp_path / "data"
    report = prepare_dataset("ade847", tmp_path / "downloads", data, workers=2, progress=False,
                             verify_checksums=False)
    root = data / ADE
    zipped = zip_members(tmp_path / "downloads/ADE20K_2021_17_01.zip")
    sizes = {"ADE_val_00000001": (512, 522), "ADE_val_00000002": None, "ADE_val_00000003": None}
    for stem, labels in expected.items():
        assert np.array_equal(read_tif(root / f"annotations_detectron2/validation/{stem}.tif"), labels), stem
        folder = KITCHEN if stem == "ADE_val_00000002" else STREET
        original = zipped[f"{folder}/{stem}.jpg"]
        written = (root / f"images_detectron2/validation/{stem}.jpg").read_bytes()
        assert written == catseg_jpeg(original, sizes[stem]) and written != original, stem
        with Image.open(root / f"images_detectron2/validation/{stem}.jpg") as image:
            assert image.size == labels.shape[::-1]
    assert sorted(p.name for p in (root / "images_detectron2/validation").iterdir()) == [f"{s}.jpg" for s in expected]
    assert sorted(p.relative_to(data).as_posix() for p in data.iterdir()) == ["ADE20K_2021_17_01"]
    assert sorted(p.name for p in root.iterdir()) == ["annotations_detectron2", "images_detectron2"]
    assert report["cards"]["ade847"] == {"status": "incomplete", "found": 3, "expected": 2000}
    assert report["sources"]["ade20k_full"]["kind"] == "zip"
    card = dataclasses.replace(load_card("ade847"), num_images=3)
    check = check_dataset(card, data, read_files=True)
    assert (check.status, check.found, check.bad) == ("found", 3, [])

    before = tree(data)
    again = prepare_dataset("ade20k_full", tmp_path / "downloads/ADE20K_2021_17_01.zip", data, progress=False)
    assert tree(data) == before
    assert again["outputs"] == {"total": 6, "in_place": 6, "resumed": 0, "written": 0}
    assert again["sources"]["ade20k_full"]["checksum"] == "not checked: nothing to write"


def test_ade847_from_the_unpacked_folder(tmp_path: Path) -> None:
    expected = ade_downloads(tmp_path / "downloads")
    with zipfile.ZipFile(tmp_path / "downloads/ADE20K_2021_17_01.zip") as archive:
        archive.extractall(tmp_path / "unpacked")
    report = prepare_dataset("ade847", tmp_path / "unpacked" / ADE, tmp_path / "data", progress=False)
    assert report["sources"]["ade20k_full"]["kind"] == "folder"
    labels = read_tif(tmp_path / "data" / ADE / "annotations_detectron2/validation/ADE_val_00000002.tif")
    assert np.array_equal(labels, expected["ADE_val_00000002"])


class Payload:
    """A pickle that would run a shell command when loaded by pickle.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def replace_member(archive: Path, name: str, content: bytes | None) -> None:
    members = zip_members(archive)
    if content is None:
        del members[name]
    else:
        members[name] = content
    archive.unlink()
    write_zip(archive, members)


@pytest.mark.parametrize("case", ["code", "list", "no folder", "bad folder", "missing image", "seg size"])
def test_ade847_foreign_or_corrupt_download_is_a_clear_error_that_leaves_the_root(tmp_path: Path, case: str) -> None:
    ade_downloads(tmp_path / "downloads")
    archive = tmp_path / "downloads/ADE20K_2021_17_01.zip"
    marker = tmp_path / "pwned"
    index_name = f"{ADE}index_ade20k.pkl"
    index = {"filename": ["ADE_val_00000001.jpg"], "folder": [STREET]}
    content, message = {
        "code": (pickle.dumps({"filename": [], "folder": [], "x": Payload(marker)}),
                 r"index_ade20k\.pkl is not the ADE20K-Full index.*refers to (posix|os|nt)\.system"),
        "list": (pickle.dumps([1, 2]), r"index_ade20k\.pkl is not the ADE20K-Full index.*holds a list"),
        "no folder": (pickle.dumps({"filename": ["ADE_val_00000001.jpg"]}), r"not the ADE20K-Full index.*with keys"),
        "bad folder": (pickle.dumps({**index, "folder": ["../../elsewhere"]}), r"points outside"),
        "missing image": (pickle.dumps({"filename": ["ADE_val_00000005.jpg"], "folder": [STREET]}),
                          r"street/ADE_val_00000005\.jpg is missing, though .*index_ade20k\.pkl lists it"),
        "seg size": (None, r"ADE_val_00000003_seg\.png is 20x29, its image 20x30.*request_data"),
    }[case]
    if content is not None:
        replace_member(archive, index_name, content)
    else:
        replace_member(archive, f"{STREET}/ADE_val_00000003_seg.png", png_bytes(np.zeros((29, 20, 3), np.uint8)))
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.txt").write_text("keep")
    before = tree(data)
    with pytest.raises(DataError, match=message):
        prepare_dataset("ade847", archive, data, progress=False, verify_checksums=False)
    assert tree(data) == before and not (data / STAGING_DIR).exists()
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_ade20k_index_of_any_pickle_protocol_is_read(tmp_path: Path, protocol: int) -> None:
    from benchmark.prepare.ade20k_full import read_index

    index = {"folder": [STREET, KITCHEN], "filename": ["ADE_val_00000001.jpg", "ADE_val_00000002.jpg"],
             "objectPresence": np.eye(3, dtype=np.uint8), "wordnet_level1": [["a", "b"], []], "counts": {1, 2},
             "raw": b"\x00\xff", "frequency": np.float64(0.5)}
    archive = write_zip(tmp_path / "ADE20K_2021_17_01.zip",
                        {f"{ADE}index_ade20k.pkl": pickle.dumps(index, protocol=protocol)})
    try:
        source = open_source(SourceSpec("zip", str(archive), "download it again"))
        assert read_index(source, {f"{ADE}index_ade20k.pkl"}) == (index["folder"], index["filename"])
    finally:
        close_sources()


def test_ade20k_full_label_table_is_the_cards_classes() -> None:
    table = yaml.safe_load(Path("benchmark/prepare/ade20k_full_labels.yaml").read_text(encoding="utf-8"))
    rows = sorted(table["rows"], key=lambda row: row["trainId"])
    assert [row["trainId"] for row in rows] == list(range(847))
    assert len({row["id"] for row in rows}) == 847
    assert [row["name"] for row in rows] == list(load_card("ade847").classes)
    by_id = {row["id"]: row["trainId"] for row in rows}
    for object_id, train_id in (WALL, BUILDING, SKY, AIRPLANE, ADDING_MACHINE):
        assert by_id[object_id] == train_id
    assert not set(NOT_AMONG_847) & set(by_id)


# ---------------------------------------------------------------- PASCAL Context, 459 classes (context459)

VOC = "VOCdevkit/VOC2010/"
SHAPES = {"2008_000002": (12, 16), "2008_000003": (12, 16), "2008_000007": (10, 14), "2008_000009": (12, 16)}
VAL = ["2008_000009", "2008_000003", "2008_000007"]  # as ImageSets/Main/val.txt lists them (unsorted here)


def mat_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, arrays)
    return buffer.getvalue()


def write_targz(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def labels_txt(names: list[str]) -> bytes:
    return "".join(f"{k}: {name}\n" for k, name in enumerate(names, start=1)).encode()


def context_downloads(folder: Path, mats: dict[str, bytes] | None = None,
                      names: list[str] | None = None) -> dict[str, np.ndarray]:
    """VOC 2010 tar + trainval.tar.gz; returns each val stem's expected label, by hand."""
    voc = {f"{VOC}JPEGImages/{stem}.jpg": random_jpeg(*shape, seed=n) for n, (stem, shape) in enumerate(SHAPES.items())}
    voc[f"{VOC}ImageSets/Main/val.txt"] = "".join(f"{s}\n" for s in VAL).encode()
    voc[f"{VOC}ImageSets/Main/train.txt"] = b"2008_000002\n"
    voc[f"{VOC}Annotations/2008_000002.xml"] = b"<annotation/>"
    write_tar(folder / "VOCtrainval_03-May-2010.tar", voc)

    maps = {stem: np.zeros(shape, dtype=np.uint16) for stem, shape in SHAPES.items()}
    maps["2008_000003"][0:4, :] = 1          # accordion -> 0
    maps["2008_000003"][4:12, 0:8] = 459     # wool -> 458
    maps["2008_000003"][4:12, 8:16] = 284    # k = 284 -> 283
    maps["2008_000007"][2:5, 3:9] = 257      # above 255 -> 256
    maps["2008_000009"][:, :] = 26           # k = 26 -> 25
    maps["2008_000009"][11, 15] = 0          # unlabelled -> void
    expected = {
        "2008_000003": np.full((12, 16), VOID, np.uint16),
        "2008_000007": np.full((10, 14), VOID, np.uint16),
        "2008_000009": np.full((12, 16), 25, np.uint16),
    }
    expected["2008_000003"][0:4, :] = 0
    expected["2008_000003"][4:12, 0:8] = 458
    expected["2008_000003"][4:12, 8:16] = 283
    expected["2008_000007"][2:5, 3:9] = 256
    expected["2008_000009"][11, 15] = VOID
    members = {f"trainval/{stem}.mat": mat_bytes(LabelMap=label_map) for stem, label_map in maps.items()}
    members.update(mats or {})
    members["labels.txt"] = labels_txt(names or list(load_card("context459").classes))
    write_targz(folder / "trainval.tar.gz", members)
    return expected


def test_context459_labels_and_split_from_the_official_downloads(tmp_path: Path) -> None:
    expected = context_downloads(tmp_path / "downloads")
    data = tmp_path / "data"
    report = prepare_dataset("context459", tmp_path / "downloads", data, workers=2, progress=False,
                             verify_checksums=False)
    root = data / VOC
    for stem, labels in expected.items():
        assert np.array_equal(read_tif(root / f"annotations_detectron2/pc459_val/{stem}.tif"), labels), stem
    assert sorted(p.name for p in (root / "annotations_detectron2/pc459_val").iterdir()) == [
        "2008_000003.tif", "2008_000007.tif", "2008_000009.tif"]
    assert (root / "ImageSets/SegmentationContext/val.txt").read_text() == "2008_000003\n2008_000007\n2008_000009\n"
    assert (root / "ImageSets/Main/val.txt").read_text() == "".join(f"{s}\n" for s in VAL)
    assert (root / "JPEGImages/2008_000002.jpg").is_file() and (root / "Annotations/2008_000002.xml").is_file()
    assert report["cards"]["context459"] == {"status": "incomplete", "found": 3, "expected": 5105}
    assert {s["kind"] for s in report["sources"].values()} == {"tar"}
    card = dataclasses.replace(load_card("context459"), num_images=3)
    check = check_dataset(card, data, read_files=True)
    assert (check.status, check.found, check.bad) == ("found", 3, [])

    before = tree(data)
    again = prepare_dataset("pascal_context_full", tmp_path / "downloads", data, progress=False)
    assert tree(data) == before and again["outputs"]["written"] == 0


def test_context459_from_catsegs_unpacked_layout_via_the_command_line(tmp_path: Path) -> None:
    from benchmark.cli import main

    expected = context_downloads(tmp_path / "downloads")
    unpacked = tmp_path / "datasets"
    with tarfile.open(tmp_path / "downloads/VOCtrainval_03-May-2010.tar") as archive:
        archive.extractall(unpacked, filter="data")
    with tarfile.open(tmp_path / "downloads/trainval.tar.gz") as archive:
        archive.extractall(unpacked / VOC, filter="data")  # CAT-Seg's README: into VOCdevkit/VOC2010
    data = tmp_path / "data"
    code = main(["prepare", "context459", "--src", str(unpacked), "--data-root", str(data), "--no-progress"])
    assert code == 1  # incomplete: 3 of the card's 5105 images
    labels = read_tif(data / VOC / "annotations_detectron2/pc459_val/2008_000003.tif")
    assert np.array_equal(labels, expected["2008_000003"])


def test_context459_keeps_the_identical_split_file_that_prepare_context59_wrote(tmp_path: Path) -> None:
    context_downloads(tmp_path / "downloads")
    split = tmp_path / "data" / VOC / "ImageSets/SegmentationContext/val.txt"
    split.parent.mkdir(parents=True)
    split.write_text("2008_000003\n2008_000007\n2008_000009\n")
    written = split.stat().st_mtime_ns
    prepare_dataset("context459", tmp_path / "downloads", tmp_path / "data", progress=False, verify_checksums=False)
    assert split.stat().st_mtime_ns == written


def test_context459_split_file_that_differs_from_the_one_in_place_is_an_error(tmp_path: Path) -> None:
    context_downloads(tmp_path / "downloads")
    data = tmp_path / "data"
    split = data / VOC / "ImageSets/SegmentationContext/val.txt"
    split.parent.mkdir(parents=True)
    split.write_text("2008_000003\n2008_000007\n")
    before = tree(data)
    with pytest.raises(DataError, match=r"SegmentationContext/val\.txt"):
        prepare_dataset("context459", tmp_path / "downloads", data, progress=False, verify_checksums=False)
    assert tree(data) == before


CLASSES = list(load_card("context459").classes)


@pytest.mark.parametrize("mats, names, message", [
    ({}, [*CLASSES[:2], "air conditioner", *CLASSES[3:]],
     r"trainval\.tar\.gz: labels\.txt: class 3 is 'air conditioner', the context459 card .* says 'airconditioner'"),
    ({}, CLASSES[:-1], r"labels\.txt: numbers classes 1\.\.458 \(458 of them\), expected 1\.\.459"),
    ({"trainval/2008_000003.mat": mat_bytes(Other=np.zeros((12, 16), np.uint16))}, None,
     r"trainval/2008_000003\.mat: holds no LabelMap.*roozbehm\.info"),
    ({"trainval/2008_000003.mat": mat_bytes(LabelMap=np.full((12, 16), 460, np.uint16))}, None,
     r"2008_000003\.mat: LabelMap values \[460\] are outside 0\.\.459"),
    ({"trainval/2008_000003.mat": mat_bytes(LabelMap=np.zeros((12, 16)))}, None,
     r"2008_000003\.mat: LabelMap is float64 of shape \(12, 16\), expected a 2-D integer map"),
    ({"trainval/2008_000007.mat": mat_bytes(LabelMap=np.zeros((12, 16), np.uint16))}, None,
     r"2008_000007\.mat: LabelMap is 16x12, the image 2008_000007\.jpg 14x10"),
    ({"trainval/2008_000009.mat": b"MATLAB 5.0 MAT-file, but not really"}, None,
     r"2008_000009\.mat: not a readable MATLAB file"),
])
def test_context459_foreign_or_corrupt_annotation_is_a_clear_error_that_leaves_the_root(
        tmp_path: Path, mats: dict[str, bytes], names: list[str] | None, message: str) -> None:
    context_downloads(tmp_path / "downloads", mats=mats, names=names)
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.txt").write_text("keep")
    before = tree(data)
    with pytest.raises(DataError, match=message):
        prepare_dataset("context459", tmp_path / "downloads", data, progress=False, verify_checksums=False)
    assert tree(data) == before


def test_context459_val_image_without_annotation_or_truncated_archive_is_an_error(tmp_path: Path) -> None:
    context_downloads(tmp_path / "downloads")
    archive = tmp_path / "downloads/trainval.tar.gz"
    with tarfile.open(archive) as handle:
        members = {m.name: handle.extractfile(m).read() for m in handle.getmembers()}
    del members["trainval/2008_000007.mat"]
    write_targz(archive, members)
    with pytest.raises(DataError, match=r"trainval/2008_000007\.mat of the val split is missing.*roozbehm"):
        prepare_dataset("context459", tmp_path / "downloads", tmp_path / "data", progress=False)
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DataError, match=r"trainval\.tar\.gz.*roozbehm\.info/pascal-context/trainval\.tar\.gz"):
        prepare_dataset("context459", tmp_path / "downloads", tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


def test_both_cards_select_their_preparers() -> None:
    assert get_preparer("ade847").name == "ade20k_full" and get_preparer("context459").name == "pascal_context_full"
    assert [part.download for part in get_preparer("context459").parts] == [
        "VOCtrainval_03-May-2010.tar", "trainval.tar.gz"]
