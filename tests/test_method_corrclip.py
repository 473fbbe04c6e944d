"""CorrCLIP's tower pieces that its parity fixture cannot reach with random DINO weights (whose region means all
merge): region merging as DBSCAN(eps, min_samples=1) on max(cos) - cos, and the scope of the attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.corrclip_tower import merged_regions, scope_attention


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
