"""TCL's learned parameters for the parity fixture CLIP, named as in the released tcl.pth: what
tools/parity/make_tcl.py hands the reference and tests/parity/test_tcl_parity.py rebuilds for the adapter."""

from __future__ import annotations

import torch

from tests.parity import harness

MASKER_SEED = 5
# The masker's learned values: the copies of CLIP's last block, ln_post and proj moved by this fraction of
# each tensor's spread; decoder convolutions drawn at their fan-in scale; gates and LayerNorm affines moved.
MASKER_PERTURBATION = 1.0
SIM2MASK = (30.0, -1.0)  # sim2mask w, b (init 10, -2.5): spreads the fixture's near-flat cosines over (0, 1)


def released_masker_weights(clip: dict[str, torch.Tensor], seed: int = MASKER_SEED) -> dict[str, torch.Tensor]:
    """TCL's learned parameters for the fixture CLIP, named as in the released tcl.pth, fp16-representable.

    Names follow the reference's module tree (models/tcl/tcl.py TCL.masker -> masker.py Masker ->
    MaskerImageFeatureEncoder(backbone = copy of CLIP's last block, decoder = GDecoder + image_proj)).
    """
    generator = torch.Generator().manual_seed(seed)

    def noise(shape: tuple[int, ...], scale: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * scale

    def moved(value: torch.Tensor) -> torch.Tensor:
        spread = float(value.std()) if value.numel() > 1 else 1.0
        return value + noise(tuple(value.shape), MASKER_PERTURBATION * spread)

    last, width = harness.VISION_LAYERS - 1, harness.VISION_WIDTH
    clip_block = f"visual.transformer.resblocks.{last}."
    state: dict[str, torch.Tensor] = {}
    for key, value in clip.items():
        if key.startswith(clip_block):
            state[f"masker.image_encoder.backbone.transformer.resblocks.{last}.{key[len(clip_block):]}"] = moved(value)
    net = "masker.image_encoder.decoder.decoder.net"
    for stage in range(2):
        for conv in ("conv", "conv2"):
            prefix = f"{net}.{stage}.{conv}"
            state[f"{prefix}.norm.weight"] = 1.0 + noise((width,), MASKER_PERTURBATION)
            state[f"{prefix}.norm.bias"] = noise((width,), MASKER_PERTURBATION)
            state[f"{prefix}.conv.weight"] = noise((width, width, 3, 3), (9 * width) ** -0.5)
            state[f"{prefix}.conv.bias"] = noise((width,), MASKER_PERTURBATION)
            state[f"{prefix}.gate.gate"] = noise((), MASKER_PERTURBATION) + 0.5
    proj = "masker.image_encoder.decoder.image_proj"
    state[f"{proj}.ln.weight"] = moved(clip["visual.ln_post.weight"])
    state[f"{proj}.ln.bias"] = moved(clip["visual.ln_post.bias"])
    state[f"{proj}.proj"] = moved(clip["visual.proj"])
    state["masker.sim2mask.w"] = torch.tensor(SIM2MASK[0])
    state["masker.sim2mask.b"] = torch.tensor(SIM2MASK[1])
    return {key: value.half().float() for key, value in state.items()}
