"""CorrCLIP's pieces that its parity fixture does not pin down: region merging as DBSCAN(eps, min_samples=1) on
max(cos) - cos and the attention's scope on handcrafted features, reading region maps (and the errors for bad ones),
and the map correction's tie rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.errors import BenchmarkError
from benchmark.protocol import load_protocol
from methods.clip_backbone import backbone_from_model
from methods.corrclip import CorrCLIP, RegionMaps
from methods.corrclip_tower import merged_regions, scope_attention
from tests.factories import write_tiny_vfm
from tests.test_clip_baselines import tiny_clip


def unit_rows(*angles: float) -> torch.Tensor:
    return torch.stack([torch.tensor([torch.cos(torch.tensor(a)), torch.sin(torch.tensor(a))]) for a in angles])


def test_regions_merge_transitively_where_cosines_are_within_eps_of_the_largest():
    ids = torch.tensor([[0, 1, 2, 3], [0, 1, 4, 3]])
    # region means at angles: 1 -> 0, 2 -> 0.55, 3 -> 1.1 (1~2 and 2~3 within eps 0.2 of cos 1, 1~3 not), 4 -> 2.5
    angles = {0: 3.0, 1: 0.0, 2: 0.55, 3: 1.1, 4: 2.5}
    unit = unit_rows(*[angles[int(v)] for v in ids.reshape(-1)])
    merged = merged_regions(ids, unit, eps=0.2)
    assert torch.equal(merged[:, 0], torch.tensor([0, 0]))  # the unsegmented area keeps its id
    assert merged[0, 1] == merged[0, 2] == merged[0, 3] == merged[1, 3] >= 10000  # 1 ~ 2 ~ 3, one group
    assert merged[1, 2] >= 10000 and merged[1, 2] != merged[0, 1]
    assert (1 - torch.cos(torch.tensor(1.1))) > 0.2  # 1 and 3 merge only through 2


def test_two_regions_are_left_as_they_are():
    ids = torch.tensor([[0, 5], [5, 5]])
    assert torch.equal(merged_regions(ids, unit_rows(0.0, 1.0, 2.0, 3.0), eps=0.2), ids)


def test_scope_keeps_same_region_pairs_and_similar_pairs_with_the_unsegmented_area():
    unit = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=-1)
    similarity = unit @ unit.T
    ids = torch.tensor([0, 7, 7, 9])  # token 0 unsegmented
    weights = scope_attention(similarity, ids, temperature=4.0)
    above = similarity > similarity.mean()
    allowed = torch.tensor([[above[0, 0], above[0, 1], above[0, 2], above[0, 3]],
                            [above[1, 0], True, True, False],
                            [above[2, 0], True, True, False],
                            [above[3, 0], False, False, True]])
    expected = (similarity * 4.0).masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    assert torch.allclose(weights, expected) and torch.equal(weights > 0, allowed)


@pytest.fixture(scope="module")
def method(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corrclip")
    dino, dino_weights = write_tiny_vfm(folder / "dino")
    backbone = backbone_from_model(tiny_clip(image_size=64, patch=8, layers=4), "tiny-8px")
    return CorrCLIP(backbone=backbone, vfm=str(dino), vfm_weights=str(dino_weights), spatial_layers=1,
                    region_masks=str(folder / "masks")).eval()


def test_region_maps_are_read_by_the_image_file_stem_and_bad_files_are_named(method, tmp_path):
    protocol = load_protocol("corrclip")
    method.setup(protocol, protocol.benchmarks["cityscapes"])
    folder = Path(method.options["region_masks"]) / "city"
    folder.mkdir(parents=True, exist_ok=True)
    image, original = torch.zeros(3, 16, 24), torch.zeros(8, 12, 3, dtype=torch.uint8)
    missing = r"frankfurt_000000_000294_leftImg8bit\.npz not found; get .*dk258/CorrCLIP"
    with pytest.raises(BenchmarkError, match=missing):
        method.encode_image(image, original, "frankfurt/frankfurt_000000_000294")
    ids = np.arange(96).reshape(8, 12) % 3
    np.savez(folder / "frankfurt_000000_000294_leftImg8bit.npz", instance_mask=ids)
    maps = method.encode_image(image, original, "frankfurt/frankfurt_000000_000294")
    assert maps.original.tolist() == ids.tolist() and maps.resized.shape == (16, 24)
    assert torch.equal(maps.resized, F.interpolate(torch.from_numpy(ids)[None, None].float(), (16, 24))[0, 0].long())
    with pytest.raises(BenchmarkError, match=r"is \(8, 12\), the image \(9, 12\)"):
        method.encode_image(image, torch.zeros(9, 12, 3, dtype=torch.uint8), "frankfurt/frankfurt_000000_000294")
    (folder / "broken_leftImg8bit.npz").write_bytes(b"not a zip")
    with pytest.raises(BenchmarkError, match=r"broken_leftImg8bit\.npz is not a region map"):
        method.encode_image(image, original, "broken")
    np.savez(folder / "floats_leftImg8bit.npz", instance_mask=np.zeros((8, 12)))
    with pytest.raises(BenchmarkError, match="not an integer label map"):
        method.encode_image(image, original, "floats")


def test_without_a_region_map_folder_the_run_stops_with_where_to_get_one(method):
    protocol = load_protocol("corrclip")
    bare = CorrCLIP(backbone=method.clip, vfm=method.options["vfm"], vfm_weights=method.options["vfm_weights"],
                    spatial_layers=1)
    with pytest.raises(BenchmarkError, match=r"region_masks=<folder>"):
        bare.setup(protocol, protocol.benchmarks["voc21"])
    with pytest.raises(BenchmarkError, match="spatial branch averages 1 to depth - 2 = 2 blocks"):
        CorrCLIP(backbone=method.clip, vfm=method.options["vfm"], vfm_weights=method.options["vfm_weights"])


def test_map_correction_gives_each_region_but_the_smallest_id_its_most_frequent_label(method):
    ids = torch.tensor([[0, 0, 5, 5, 5], [0, 0, 5, 9, 9]])
    labels = torch.tensor([[1, 2, 3, 3, 4], [1, 2, 4, 2, 6]])
    maps = RegionMaps(ids, ids)
    corrected = method.refine_labels(torch.zeros(7, 2, 5), labels, maps)
    assert corrected.tolist() == [[1, 2, 3, 3, 3], [1, 2, 3, 2, 2]]  # region 9: a 2-6 tie goes to the smaller label
    method.options["map_correction"] = False
    assert method.refine_labels(torch.zeros(7, 2, 5), labels, maps) is labels
    method.options["map_correction"] = True
