"""`zsbench prepare` on miniature downloads written in each official archive's layout and formats."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.errors import DataError
from benchmark.prepare import NAMES, get_preparer, prepare_dataset
from benchmark.prepare.checksums import Digest, Download, load_downloads
from benchmark.prepare.rle import decode_mask
from benchmark.prepare.staging import STAGING_DIR

# ---------------------------------------------------------------- writing miniature downloads


def png(array: np.ndarray, palette: bool = False) -> bytes:
    image = Image.fromarray(array.astype(np.uint8))
    if palette:
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpg(height: int = 6, width: int = 8, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes], stored: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as archive:
        folders = sorted({name.rsplit("/", 1)[0] + "/" for name in members if "/" in name})
        for folder in folders:
            archive.writestr(folder, b"")
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "L"
        return np.array(image)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root with its size and mtime."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


# ---------------------------------------------------------------- Cityscapes

CITY_FRAMES = ["frankfurt/frankfurt_000000_000294", "lindau/lindau_000000_000019"]
# cityscapesscripts labels.py, id 0..33 -> trainId, written out by hand
CITY_TRAIN_IDS = [255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7,
                  8, 9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18]


def city_label_ids() -> np.ndarray:
    return np.arange(34, dtype=np.uint8).reshape(2, 17)


def cityscapes_downloads(folder: Path) -> None:
    images, labels = {}, {"README": b"gtFine", "license.txt": b"license"}
    for frame in CITY_FRAMES:
        images[f"leftImg8bit/val/{frame}_leftImg8bit.png"] = png(np.full((2, 17), 90))
        labels[f"gtFine/val/{frame}_gtFine_labelIds.png"] = png(city_label_ids())
        labels[f"gtFine/val/{frame}_gtFine_instanceIds.png"] = png(city_label_ids())
        labels[f"gtFine/val/{frame}_gtFine_color.png"] = png(np.zeros((2, 17)))
        labels[f"gtFine/val/{frame}_gtFine_polygons.json"] = b'{"imgHeight": 2, "imgWidth": 17, "objects": []}'
    images["leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"] = png(np.zeros((2, 17)))
    labels["gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"] = png(city_label_ids())
    write_zip(folder / "leftImg8bit_trainvaltest.zip", images)
    write_zip(folder / "gtFine_trainvaltest.zip", labels)


def test_cityscapes_every_label_id_and_parallel_workers(tmp_path: Path) -> None:
    cityscapes_downloads(tmp_path / "downloads")
    data = tmp_path / "data"
    report = prepare_dataset("cityscapes", tmp_path / "downloads", data, workers=2, progress=False,
                             verify_checksums=False)
    for frame in CITY_FRAMES:
        labels = read_png(data / f"cityscapes/gtFine/val/{frame}_gtFine_labelTrainIds.png")
        assert labels.ravel().tolist() == CITY_TRAIN_IDS
        assert (data / f"cityscapes/leftImg8bit/val/{frame}_leftImg8bit.png").is_file()
        assert (data / f"cityscapes/gtFine/val/{frame}_gtFine_polygons.json").is_file()
    assert not (data / "cityscapes/leftImg8bit/train").exists()
    assert report["cards"]["cityscapes"] == {"status": "incomplete", "found": 2, "expected": 500}
    assert report["complete"] is False and "incomplete" in report["summary"]
    assert report["outputs"]["written"] == report["outputs"]["total"] == 2 * 6
    assert not (data / STAGING_DIR).exists()


def test_cityscapes_from_unpacked_folders_and_from_one_archive(tmp_path: Path) -> None:
    cityscapes_downloads(tmp_path / "zips")
    unpacked = tmp_path / "unpacked"
    for archive in ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip"):
        with zipfile.ZipFile(tmp_path / "zips" / archive) as handle:
            handle.extractall(unpacked)
    from_folder = prepare_dataset("cityscapes", unpacked, tmp_path / "a", progress=False)
    assert {s["kind"] for s in from_folder["sources"].values()} == {"folder"}
    from_file = prepare_dataset("cityscapes", tmp_path / "zips" / "gtFine_trainvaltest.zip", tmp_path / "b",
                                progress=False, verify_checksums=False)
    assert {s["kind"] for s in from_file["sources"].values()} == {"zip"}
    for root in (tmp_path / "a", tmp_path / "b"):
        labels = read_png(root / f"cityscapes/gtFine/val/{CITY_FRAMES[1]}_gtFine_labelTrainIds.png")
        assert labels.ravel().tolist() == CITY_TRAIN_IDS


# ---------------------------------------------------------------- COCO-Stuff and COCO-Object

COCO_IDS = ["000000000139", "000000000285"]
UNUSED = [11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90]  # COCO thing ids without segmentations
RAW = np.array([v for v in range(182) if v not in UNUSED] + [255], dtype=np.uint8).reshape(4, 43)


def expected_stuff171(raw: int) -> int:
    return 255 if raw == 255 else raw - sum(u < raw for u in UNUSED)


def expected_object(raw: int, strict: bool) -> int:
    if raw == 255:
        return 255 if strict else 0
    return expected_stuff171(raw) + 1 if raw <= 89 else 0


def coco_downloads(folder: Path, extra_label: np.ndarray | None = None) -> None:
    images = {f"val2017/{i}.jpg": jpg(4, 43, seed=n) for n, i in enumerate(COCO_IDS)}
    labels = {
        f"val2017/{COCO_IDS[0]}.png": png(RAW),
        f"val2017/{COCO_IDS[1]}.png": png(RAW[::-1], palette=True),
        "train2017/000000000009.png": png(RAW),
    }
    if extra_label is not None:
        images["val2017/000000000632.jpg"] = jpg(4, 43)
        labels["val2017/000000000632.png"] = png(extra_label)
    write_zip(folder / "val2017.zip", images)
    write_zip(folder / "stuffthingmaps_trainval2017.zip", labels)


def test_coco_stuff_and_both_coco_object_variants(tmp_path: Path) -> None:
    coco_downloads(tmp_path / "downloads")
    data = tmp_path / "data"
    report = prepare_dataset("coco_object", tmp_path / "downloads", data, progress=False, verify_checksums=False)
    folder = data / "coco_stuff164k/annotations/val2017"
    for stem, raw in ((COCO_IDS[0], RAW), (COCO_IDS[1], RAW[::-1])):
        raw_values = raw.ravel().tolist()
        assert read_png(folder / f"{stem}_labelTrainIds.png").ravel().tolist() == [
            expected_stuff171(v) for v in raw_values]
        assert read_png(folder / f"{stem}_instanceTrainIds.png").ravel().tolist() == [
            expected_object(v, strict=False) for v in raw_values]
        assert read_png(folder / f"{stem}_instanceTrainIdsStrict.png").ravel().tolist() == [
            expected_object(v, strict=True) for v in raw_values]
        assert (folder / f"{stem}.png").read_bytes() == zipfile.ZipFile(
            tmp_path / "downloads/stuffthingmaps_trainval2017.zip").read(f"val2017/{stem}.png")
        assert (data / f"coco_stuff164k/images/val2017/{stem}.jpg").is_file()
    first = {name: read_png(folder / f"{COCO_IDS[0]}{suffix}")
             for name, suffix in (("171", "_labelTrainIds.png"), ("object", "_instanceTrainIds.png"),
                                  ("strict", "_instanceTrainIdsStrict.png"))}
    where = {int(v): tuple(np.argwhere(np.equal(RAW, v))[0]) for v in (0, 12, 89, 91, 181, 255)}
    # raw -> (stuff 171, object as published, object strict), by hand
    for raw, values in {0: (0, 1, 1), 12: (11, 12, 12), 89: (79, 80, 80), 91: (80, 0, 0),
                        181: (170, 0, 0), 255: (255, 0, 255)}.items():
        assert (first["171"][where[raw]], first["object"][where[raw]], first["strict"][where[raw]]) == values
    assert not (data / "coco_stuff164k/annotations/train2017").exists()
    assert set(report["cards"]) == {"coco_stuff171", "coco_object", "coco_object_strict"}
    assert all(c == {"status": "incomplete", "found": 2, "expected": 5000} for c in report["cards"].values())


def test_coco_label_with_an_id_outside_the_table_is_an_error_that_leaves_the_root(tmp_path: Path) -> None:
    coco_downloads(tmp_path / "downloads", extra_label=np.full((4, 43), 11))
    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.txt").write_text("mine")
    before = tree(data)
    with pytest.raises(DataError, match=r"000000000632\.png.*\[11\]"):
        prepare_dataset("coco_stuff164k", tmp_path / "downloads", data, progress=False, verify_checksums=False)
    assert tree(data) == before


# ---------------------------------------------------------------- PASCAL Context


def rle_string(counts: list[int]) -> str:
    """COCO's compressed RLE (maskApi.c rleToString), written from its description."""
    chars = []
    for index, count in enumerate(counts):
        value = count - counts[index - 2] if index > 2 else count
        more = True
        while more:
            digit = value & 0x1F
            value >>= 5
            more = value != -1 if digit & 0x10 else value != 0
            if more:
                digit |= 0x20
            chars.append(chr(digit + 48))
    return "".join(chars)


def rle(mask: np.ndarray) -> dict:
    flat = mask.T.ravel().astype(bool)
    counts, current, run = [], False, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": rle_string(counts)}


def box(shape: tuple[int, int], top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def test_rle_decoding_round_trips_random_masks() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 5), (40, 33), (300, 200)]:
        for density in (0.02, 0.5, 0.98):
            mask = rng.random(shape) < density
            if shape == (300, 200):
                mask[:, :150] = True  # a run longer than 2^15 pixels
            assert np.array_equal(decode_mask(rle(mask), "test"), mask)
    assert not decode_mask({"size": [2, 3], "counts": [6]}, "test").any()
    with pytest.raises(DataError, match="cover"):
        decode_mask({"size": [2, 3], "counts": [2, 2]}, "test")


CONTEXT_SHAPE = (12, 16)


def context_downloads(folder: Path) -> dict[str, np.ndarray]:
    """VOC 2010 tar + trainval_merged.json; returns each stem's expected label by hand."""
    stems = {"2008_000002": "train", "2008_000003": "val", "2008_000007": "val", "2008_000008": "test"}
    tar = {f"VOCdevkit/VOC2010/JPEGImages/{s}.jpg": jpg(*CONTEXT_SHAPE) for s in stems}
    tar["VOCdevkit/VOC2010/ImageSets/Main/train.txt"] = b"2008_000002\n"
    write_tar(folder / "VOCtrainval_03-May-2010.tar", tar)
    images = [{"image_id": 2008000000 + int(s[-6:]), "file_name": f"{s}.jpg", "phase": phase,
               "height": CONTEXT_SHAPE[0], "width": CONTEXT_SHAPE[1]} for s, phase in stems.items()]
    # (image, category id in the 459-class numbering, box); later annotations paint over earlier ones
    paint = [
        ("2008_000002", 284, (0, 0, 12, 8)),    # person -> 37
        ("2008_000002", 2, (2, 4, 6, 12)),      # aeroplane -> 1, over part of person
        ("2008_000002", 458, (10, 10, 12, 16)),  # wood -> 59
        ("2008_000003", 19, (0, 0, 3, 3)),      # bedclothes -> 4
        ("2008_000003", 440, (1, 1, 12, 16)),   # wall -> 56
        ("2008_000008", 2, (0, 0, 12, 16)),     # test phase: not converted
    ]
    annotations = [{"id": n + 1, "image_id": 2008000000 + int(s[-6:]), "category_id": c,
                    "segmentation": rle(box(CONTEXT_SHAPE, *b))} for n, (s, c, b) in enumerate(paint)]
    content = {"info": {}, "images": images, "annos_segmentation": annotations, "categories": [],
               "parts": [], "annos_occlusion": [], "annos_boundary": []}
    (folder / "trainval_merged.json").write_text(json.dumps(content))
    first = np.zeros(CONTEXT_SHAPE, dtype=np.uint8)
    first[0:12, 0:8] = 37
    first[2:6, 4:12] = 1
    first[10:12, 10:16] = 59
    second = np.zeros(CONTEXT_SHAPE, dtype=np.uint8)
    second[0:3, 0:3] = 4
    second[1:12, 1:16] = 56
    return {"2008_000002": first, "2008_000003": second, "2008_000007": np.zeros(CONTEXT_SHAPE, np.uint8)}


def test_pascal_context_59_classes_and_splits_without_the_detail_api(tmp_path: Path) -> None:
    expected = context_downloads(tmp_path / "downloads")
    data = tmp_path / "data"
    report = prepare_dataset("context59", tmp_path / "downloads", data, progress=False, verify_checksums=False)
    root = data / "VOCdevkit/VOC2010"
    for stem, labels in expected.items():
        assert np.array_equal(read_png(root / f"SegmentationClassContext/{stem}.png"), labels), stem
    assert not (root / "SegmentationClassContext/2008_000008.png").exists()
    assert (root / "ImageSets/SegmentationContext/train.txt").read_text() == "2008_000002\n"
    assert (root / "ImageSets/SegmentationContext/val.txt").read_text() == "2008_000003\n2008_000007\n"
    assert (root / "ImageSets/Main/train.txt").read_text() == "2008_000002\n"
    assert report["cards"]["context60"] == {"status": "incomplete", "found": 2, "expected": 5105}


@pytest.mark.parametrize("content", [
    '{"images": []}',
    '[1, 2]',
    '{"images": [{"file_name": "../../escaped.jpg", "phase": "val", "height": 1, "width": 1, "image_id": 1}], '
    '"annos_segmentation": []}',
])
def test_pascal_context_foreign_json_is_a_clear_error(tmp_path: Path, content: str) -> None:
    context_downloads(tmp_path / "downloads")
    (tmp_path / "downloads/trainval_merged.json").write_text(content)
    with pytest.raises(DataError, match="trainval_merged.json: not the PASCAL Context.*codalab"):
        prepare_dataset("pascal_context", tmp_path / "downloads", tmp_path / "data", progress=False,
                        verify_checksums=False)
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------- VOC 2012 and ADE20K, as they are

VOC_STEMS = ["2007_000033", "2007_000042"]


def voc_download(path: Path) -> dict[str, bytes]:
    members = {}
    for n, stem in enumerate(VOC_STEMS):
        labels = np.zeros((6, 8), dtype=np.uint8)
        labels[1:4, 2:6] = 15
        labels[0, :] = 255
        members[f"VOCdevkit/VOC2012/JPEGImages/{stem}.jpg"] = jpg(seed=n)
        members[f"VOCdevkit/VOC2012/SegmentationClass/{stem}.png"] = png(labels, palette=True)
        members[f"VOCdevkit/VOC2012/Annotations/{stem}.xml"] = b"<annotation/>"
    members["VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"] = "".join(f"{s}\n" for s in VOC_STEMS).encode()
    write_tar(path, members)
    return members


def test_voc2012_as_it_is_and_rerun_is_a_no_op(tmp_path: Path) -> None:
    archive = tmp_path / "VOCtrainval_11-May-2012.tar"
    members = voc_download(archive)
    data = tmp_path / "data"
    report = prepare_dataset("voc21", archive, data, progress=False, verify_checksums=False)
    for name, content in members.items():
        assert (data / name).read_bytes() == content
    assert report["cards"]["voc21"]["found"] == report["cards"]["voc20"]["found"] == 2
    before = tree(data)
    again = prepare_dataset("voc2012", archive, data, progress=False)
    assert tree(data) == before
    assert again["outputs"] == {"total": len(members), "in_place": len(members), "resumed": 0, "written": 0}
    assert again["sources"]["voc2012"]["checksum"] == "not checked: nothing to write"
    in_place = prepare_dataset("voc2012", data, data, progress=False)
    assert in_place["outputs"]["written"] == 0 and tree(data) == before


def test_ade20k_as_it_is_from_the_folder_holding_the_zip(tmp_path: Path) -> None:
    members = {
        "ADEChallengeData2016/images/validation/ADE_val_00000001.jpg": jpg(),
        "ADEChallengeData2016/annotations/validation/ADE_val_00000001.png": png(np.arange(48).reshape(6, 8)),
        "ADEChallengeData2016/images/training/ADE_train_00000001.jpg": jpg(seed=1),
        "ADEChallengeData2016/objectInfo150.txt": b"Idx\tRatio\n",
    }
    write_zip(tmp_path / "downloads/ADEChallengeData2016.zip", members)
    report = prepare_dataset("ade20k", tmp_path / "downloads", tmp_path / "data", progress=False,
                             verify_checksums=False)
    for name, content in members.items():
        assert (tmp_path / "data/ade" / name).read_bytes() == content
    assert report["cards"]["ade20k"] == {"status": "incomplete", "found": 1, "expected": 2000}


# ---------------------------------------------------------------- checksums


def with_digest(monkeypatch: pytest.MonkeyPatch, name: str, algorithm: str, value: str) -> None:
    downloads = dict(load_downloads())
    downloads[name] = Download(name, downloads[name].url, (Digest(algorithm, value, "test"),))
    monkeypatch.setattr("benchmark.prepare.preparer.load_downloads", lambda: downloads)


def test_published_checksum_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "VOCtrainval_11-May-2012.tar"
    voc_download(archive)
    with_digest(monkeypatch, archive.name, "md5", hashlib.md5(archive.read_bytes()).hexdigest())
    report = prepare_dataset("voc2012", archive, tmp_path / "data", progress=False)
    assert report["sources"]["voc2012"]["checksum"].startswith("md5 ") and "matches" in report["sources"][
        "voc2012"]["checksum"]
    with_digest(monkeypatch, archive.name, "sha1", "0" * 40)
    with pytest.raises(DataError, match=r"VOCtrainval_11-May-2012\.tar: checksum does not match.*host\.robots"):
        prepare_dataset("voc2012", archive, tmp_path / "other", progress=False)
    assert not (tmp_path / "other").exists()


def test_every_download_names_a_url_and_well_formed_digests() -> None:
    downloads = load_downloads()
    for preparer in {get_preparer(name).name: get_preparer(name) for name in NAMES}.values():
        for part in preparer.parts:
            download = downloads[part.download]
            assert download.url.startswith("http")
            for digest in download.digests:
                assert len(digest.value) == hashlib.new(digest.algorithm).digest_size * 2 and digest.source


# ---------------------------------------------------------------- interruption, corrupt and foreign downloads


def test_interrupted_prepare_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmark.prepare.jobs as jobs

    coco_downloads(tmp_path / "downloads")
    data = tmp_path / "data"
    real, calls = jobs._make_chunk, []

    def interrupted(*args):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(jobs, "_make_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("coco_stuff164k", tmp_path / "downloads", data, progress=False, verify_checksums=False)
    staged = [p for p in (data / STAGING_DIR).rglob("*") if p.is_file() and p.name != "verified.json"]
    assert len(staged) == 3
    assert not (data / "coco_stuff164k").exists()
    monkeypatch.setattr(jobs, "_make_chunk", real)
    report = prepare_dataset("coco_stuff164k", tmp_path / "downloads", data, progress=False,
                             verify_checksums=False)
    assert report["outputs"] == {"total": 10, "in_place": 0, "resumed": 3, "written": 7}
    assert not (data / STAGING_DIR).exists()
    assert read_png(data / f"coco_stuff164k/annotations/val2017/{COCO_IDS[0]}_instanceTrainIds.png")[0, 0] == 1


def test_prepare_interrupted_while_moving_into_place_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.prepare.staging import Staging

    cityscapes_downloads(tmp_path / "downloads")
    data = tmp_path / "data"
    real = Staging.commit

    def half_then_interrupt(self, outputs, progress=False):
        real(self, outputs[: len(outputs) // 2], progress)
        raise KeyboardInterrupt

    monkeypatch.setattr(Staging, "commit", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("cityscapes", tmp_path / "downloads", data, progress=False, verify_checksums=False)
    monkeypatch.setattr(Staging, "commit", real)
    report = prepare_dataset("cityscapes", tmp_path / "downloads", data, progress=False, verify_checksums=False)
    assert report["outputs"] == {"total": 12, "in_place": 6, "resumed": 6, "written": 0}
    assert not (data / STAGING_DIR).exists()
    labels = read_png(data / f"cityscapes/gtFine/val/{CITY_FRAMES[0]}_gtFine_labelTrainIds.png")
    assert labels.ravel().tolist() == CITY_TRAIN_IDS


def test_truncated_archive_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "ADEChallengeData2016.zip"
    write_zip(archive, {"ADEChallengeData2016/images/validation/ADE_val_00000001.jpg": jpg()})
    archive.write_bytes(archive.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"ADEChallengeData2016\.zip: is neither a zip nor a tar.*data\.csail"):
        prepare_dataset("ade20k", archive, tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


def test_corrupt_member_discards_everything_written(tmp_path: Path) -> None:
    members = {f"ADEChallengeData2016/images/validation/ADE_val_0000000{i}.jpg": jpg(seed=i) for i in range(1, 5)}
    members["ADEChallengeData2016/images/validation/ADE_val_00000009.jpg"] = b"CORRUPT ME" * 50
    archive = write_zip(tmp_path / "ADEChallengeData2016.zip", members, stored=True)
    content = archive.read_bytes()
    at = content.index(b"CORRUPT ME") + 100
    archive.write_bytes(content[:at] + b"X" + content[at + 1:])
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.txt").write_text("keep")
    before = tree(data)
    with pytest.raises(DataError, match=r"ADE_val_00000009\.jpg.*corrupt or truncated.*ADEChallengeData2016"):
        prepare_dataset("ade20k", archive, data, progress=False, verify_checksums=False)
    assert tree(data) == before


def test_foreign_archive_is_a_clear_error(tmp_path: Path) -> None:
    write_zip(tmp_path / "val2017.zip", {"holiday/beach.jpg": jpg()})
    coco_downloads(tmp_path / "real")
    (tmp_path / "stuffthingmaps_trainval2017.zip").write_bytes(
        (tmp_path / "real/stuffthingmaps_trainval2017.zip").read_bytes())
    with pytest.raises(DataError, match=r"val2017\.zip: does not look like val2017\.zip.*images\.cocodataset"):
        prepare_dataset("coco_stuff164k", tmp_path, tmp_path / "data", progress=False, verify_checksums=False)
    assert not (tmp_path / "data").exists()


def test_path_traversal_member_rejects_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "VOCtrainval_11-May-2012.tar"
    write_tar(archive, {"VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt": b"x\n",
                        "VOCdevkit/VOC2012/../../../escaped.txt": b"gotcha"})
    with pytest.raises(DataError, match="points outside"):
        prepare_dataset("voc2012", archive, tmp_path / "data", progress=False, verify_checksums=False)
    assert not (tmp_path / "data").exists() and not (tmp_path / "escaped.txt").exists()


def test_missing_download_names_where_to_get_it(tmp_path: Path) -> None:
    (tmp_path / "downloads").mkdir()
    with pytest.raises(DataError, match=r"leftImg8bit_trainvaltest\.zip.*cityscapes-dataset\.com"):
        prepare_dataset("cityscapes", tmp_path / "downloads", tmp_path / "data", progress=False)
    with pytest.raises(DataError, match="no such file"):
        prepare_dataset("cityscapes", tmp_path / "nothing", tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()
