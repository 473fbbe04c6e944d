"""PAMR (methods/pamr.py) against hand-made inputs and the paper's stacked formulation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.pamr import pamr, pamr_affinity


def stacked_pamr(image: torch.Tensor, mask: torch.Tensor, steps: int, dilations: tuple[int, ...]) -> torch.Tensor:
    """All neighbours stacked at once, std over them, softmax, then repeated weighted sums."""
    height, width = image.shape[-2:]

    def neighbours(x: torch.Tensor, centre: bool) -> torch.Tensor:
        found = []
        for d in dilations:
            padded = F.pad(x, [d] * 4, mode="replicate")
            for dy in (-d, 0, d):
                for dx in (-d, 0, d):
                    if dy == dx == 0 and not centre:
                        continue
                    found.append(padded[..., d + dy:d + dy + height, d + dx:d + dx + width])
        return torch.stack(found, dim=2)

    std = neighbours(image, centre=True).std(dim=2, keepdim=True)
    affinity = (-(image[:, :, None] - neighbours(image, centre=False)).abs() / (1e-8 + 0.1 * std)).mean(dim=1)
    weights = affinity.softmax(dim=1)[:, None]
    for _ in range(steps):
        mask = (neighbours(mask, centre=False) * weights).sum(dim=2)
    return mask


def two_regions() -> torch.Tensor:
    image = torch.zeros(1, 1, 6, 8)
    image[..., 4:] = 1.0
    return image


def test_flat_interior_pixel_takes_the_mean_of_its_eight_neighbours():
    torch.manual_seed(0)
    mask = torch.randn(1, 2, 6, 8)
    refined = pamr(two_regions(), mask, steps=1, dilations=(1,))
    expected = (mask[..., 1:4, 0:3].sum(dim=(-2, -1)) - mask[..., 2, 1]) / 8
    assert torch.allclose(refined[..., 2, 1], expected, atol=1e-6)


def test_pixel_at_an_image_edge_ignores_neighbours_across_it():
    torch.manual_seed(1)
    mask = torch.randn(1, 2, 6, 8)
    refined = pamr(two_regions(), mask, steps=1, dilations=(1,))
    same_side = mask[..., 1:4, 2:4].sum(dim=(-2, -1)) - mask[..., 2, 3]  # 5 neighbours left of the edge
    assert torch.allclose(refined[..., 2, 3], same_side / 5, atol=1e-6)


def test_weights_sum_to_one_so_refinement_is_affine_in_the_mask():
    torch.manual_seed(2)
    image, mask = torch.randn(1, 3, 20, 24), torch.randn(1, 4, 20, 24)
    weights = pamr_affinity(image, (1, 2))
    assert weights.shape == (1, 16, 20, 24)
    assert torch.allclose(weights.sum(dim=1), torch.ones(1, 20, 24), atol=1e-6)
    assert torch.allclose(pamr(image, 3 * mask + 2, 5, (1, 2)), 3 * pamr(image, mask, 5, (1, 2)) + 2, atol=1e-4)


def test_matches_the_stacked_formulation():
    torch.manual_seed(3)
    image, mask = torch.randn(2, 3, 40, 50), torch.randn(2, 5, 40, 50)
    for dilations in ((1,), (8, 16), (1, 2, 4, 8, 12, 24)):
        expected = stacked_pamr(image, mask, 10, dilations)
        assert torch.allclose(pamr(image, mask, 10, dilations), expected, atol=1e-5)


def test_a_smaller_mask_is_resized_with_align_corners_and_dtype_is_kept():
    torch.manual_seed(4)
    image, mask = torch.randn(1, 3, 16, 16), torch.randn(1, 2, 8, 8)
    resized = F.interpolate(mask, size=(16, 16), mode="bilinear", align_corners=True)
    assert torch.allclose(pamr(image, mask, 2, (1,)), pamr(image, resized, 2, (1,)))
    assert pamr(image, mask.double(), 1, (1,)).dtype == torch.float64
