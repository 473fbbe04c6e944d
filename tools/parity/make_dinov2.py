"""Makes tests/parity/fixtures/dinov2 from DINOv2's own code (facebookresearch/dinov2): dense features of a DINOv2 with
registers, to check methods/vfm_backbone.py (timm's model, DINOv2's positional rule, the official layout converted).

    python tools/parity/make_dinov2.py --repo /path/to/dinov2/.git

The repository is unpacked at the commit into a temporary folder and its `DinoVisionTransformer` built as
dinov2/hub/backbones.py dinov2_vitb14_reg builds ViT-B/14 (patch 14, img_size 518, init_values 1.0, 4 register
tokens, interpolate_antialias=True, interpolate_offset=0.0, MemEffAttention blocks, which run plain attention
without xformers), at the fixture's width and depth, with the fixture's random weights in DINOv2's own layout
(strict load). Its get_intermediate_layers(x, n=1, reshape=True)[0] (last block, final norm, class and register
tokens dropped) is stored for inputs of several sizes.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.parity import harness  # noqa: E402
from tools.parity import reference  # noqa: E402

REPOSITORY = "facebookresearch/dinov2"
COMMIT = "b8931f7"
SEED = 2
INPUT_SEED = 3
SHAPES = {"square_336": (336, 336), "square_518": (518, 518), "wide_224x336": (224, 336)}
# (DINOv2's PatchEmbed refuses sides that are not a multiple of 14; ProxyCLIP pads its crops to a multiple of 56.)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of facebookresearch/dinov2")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "dinov2")
    args = parser.parse_args()

    weights = harness.random_dinov2_official(SEED)
    source = reference.checkout(args.repo, args.commit)
    from dinov2.layers import MemEffAttention  # the reference, from the checkout
    from dinov2.layers import NestedTensorBlock as Block
    from dinov2.models.vision_transformer import DinoVisionTransformer

    config = harness.DINOV2_CONFIG["timm_kwargs"]
    model = DinoVisionTransformer(
        img_size=518, patch_size=14, embed_dim=config["embed_dim"], depth=config["depth"],
        num_heads=config["num_heads"], mlp_ratio=4, block_fn=partial(Block, attn_class=MemEffAttention),
        init_values=1.0, ffn_layer="mlp", block_chunks=0, num_register_tokens=4, interpolate_antialias=True,
        interpolate_offset=0.0,
    )
    model.load_state_dict(weights, strict=True)
    model.eval()
    generator = torch.Generator().manual_seed(INPUT_SEED)
    arrays, cases = {}, []
    with torch.no_grad():
        for case, shape in SHAPES.items():
            images = torch.randn(1, 3, *shape, generator=generator)
            features = model.get_intermediate_layers(images, n=1, reshape=True)[0]
            arrays[case] = features.numpy()
            cases.append({"case": case, "shape": list(shape), "count": 1, "features": list(features.shape)})
    meta = {
        "method": "vfm_backbone (dinov2_vitb14_reg)", "repository": REPOSITORY, "commit": args.commit,
        "script": "tools/parity/make_dinov2.py",
        "weights": {"seed": SEED, "perturbation": harness.PERTURBATION, "config": harness.DINOV2_CONFIG,
                    "sha256": harness.weights_digest(weights), "keys": list(weights)},
        "inputs": f"torch.randn(1, 3, h, w) per case in order from torch.Generator().manual_seed({INPUT_SEED})",
        "reference_did": (
            "DinoVisionTransformer(img_size=518, patch_size=14, init_values=1.0, ffn_layer='mlp', block_chunks=0, "
            "num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0, MemEffAttention blocks "
            "(plain attention without xformers)) at the fixture's width and depth, float32 on the CPU, "
            "load_state_dict(official-layout weights, strict=True); get_intermediate_layers(x, n=1, reshape=True)[0]."
        ),
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({source})")


if __name__ == "__main__":
    main()
