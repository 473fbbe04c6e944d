from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.captions import CaptionDataError, CaptionDataset, expand_braces, resolve_shards

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 220)]


def _png_bytes(colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def _jsonl_folder(root: Path, records: list[dict] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    for index, colour in enumerate(COLOURS):
        (root / "images" / f"{index:06d}.png").write_bytes(_png_bytes(colour))
    if records is None:
        records = [
            {"image": f"images/{i:06d}.png", "caption": f"caption {i}", "objects": [{"class": "star"}]}
            for i in range(len(COLOURS))
        ]
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    with tarfile.open(path, "w") as archive:
        for key, members in samples:
            for extension, data in members.items():
                _add(archive, f"{key}.{extension}", data)
    return path


def test_jsonl_folder_gives_rgb_images_and_captions(tmp_path: Path) -> None:
    dataset = CaptionDataset(_jsonl_folder(tmp_path))
    assert len(dataset) == 3
    image, caption = dataset[1]
    assert caption == "caption 1"
    assert image.mode == "RGB" and image.size == (8, 6)
    assert image.getpixel((0, 0)) == COLOURS[1]
    assert dataset.captions == ["caption 0", "caption 1", "caption 2"]


def test_jsonl_file_source_and_transform(tmp_path: Path) -> None:
    _jsonl_folder(tmp_path)
    dataset = CaptionDataset(tmp_path / "captions.jsonl", transform=lambda im: np.asarray(im).shape)
    assert dataset[0] == ((6, 8, 3), "caption 0")


def test_missing_jsonl_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="captions.jsonl"):
        CaptionDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="other.jsonl"):
        CaptionDataset(tmp_path / "other.jsonl")


def test_line_that_is_not_json_names_file_and_line(tmp_path: Path) -> None:
    _jsonl_folder(tmp_path)
    path = tmp_path / "captions.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = '{"image": "images/000001.png", "caption": '
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CaptionDataError, match=r"captions\.jsonl:2: line is not JSON"):
        CaptionDataset(tmp_path)


def test_record_without_caption_is_an_error(tmp_path: Path) -> None:
    _jsonl_folder(tmp_path, [{"image": "images/000000.png"}])
    with pytest.raises(CaptionDataError, match=r"captions\.jsonl:1: .*caption"):
        CaptionDataset(tmp_path)


def test_missing_image_names_the_file(tmp_path: Path) -> None:
    _jsonl_folder(tmp_path)
    (tmp_path / "images" / "000002.png").unlink()
    dataset = CaptionDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"000002\.png.*captions\.jsonl:3"):
        dataset[2]


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    _jsonl_folder(tmp_path)
    (tmp_path / "images" / "000000.png").write_bytes(b"not an image")
    with pytest.raises(CaptionDataError, match=r"cannot read image .*000000\.png"):
        CaptionDataset(tmp_path)[0]


def test_tar_shards_with_txt_and_json_captions(tmp_path: Path) -> None:
    _shard(
        tmp_path / "cc-0000.tar",
        [
            ("000000", {"jpg": _png_bytes(COLOURS[0], "JPEG"), "txt": b"a red square\n"}),
            ("000001", {"png": _png_bytes(COLOURS[1]), "json": json.dumps({"caption": "green"}).encode()}),
        ],
    )
    _shard(tmp_path / "cc-0001.tar", [("sub/000002", {"png": _png_bytes(COLOURS[2]), "txt": b"blue"})])
    for source in (str(tmp_path / "cc-{0000..0001}.tar"), tmp_path):
        dataset = CaptionDataset(source)
        assert dataset.captions == ["a red square", "green", "blue"]
        image, caption = dataset[2]
        assert (caption, image.getpixel((3, 3))) == ("blue", COLOURS[2])
        assert dataset[1][0].getpixel((0, 0)) == COLOURS[1]


@pytest.mark.parametrize(
    ("members", "message"),
    [({"txt": b"no image"}, "has no image"), ({"png": _png_bytes(COLOURS[0])}, "has no caption")],
)
def test_incomplete_tar_sample_names_shard_and_key(tmp_path: Path, members: dict, message: str) -> None:
    shard = _shard(tmp_path / "bad.tar", [("k1", members)])
    with pytest.raises(CaptionDataError, match=rf"bad\.tar: sample 'k1' {message}"):
        CaptionDataset(shard)


def test_unreadable_image_in_tar_names_member(tmp_path: Path) -> None:
    shard = _shard(tmp_path / "s.tar", [("k1", {"jpg": b"garbage", "txt": b"x"})])
    with pytest.raises(CaptionDataError, match=r"s\.tar:k1\.jpg"):
        CaptionDataset(shard)[0]


def test_missing_shard_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"x-2\.tar"):
        CaptionDataset(str(tmp_path / "x-{2..3}.tar"))


def test_brace_expansion() -> None:
    assert expand_braces("cc3m-{0000..0002}.tar") == ["cc3m-0000.tar", "cc3m-0001.tar", "cc3m-0002.tar"]
    assert expand_braces("{a,b}-{9..10}") == ["a-9", "a-10", "b-9", "b-10"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert resolve_shards(["a-{1..2}.tar", "b.tar"]) == [Path("a-1.tar"), Path("a-2.tar"), Path("b.tar")]
