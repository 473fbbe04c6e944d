"""Makes tests/parity/fixtures/clip from the ClearCLIP repository's `vanilla` model type (mc-lan/ClearCLIP).

    python tools/parity/make_clip.py --repo /path/to/ClearCLIP/.git [--commit ad68a40]

The method `clip` has no repository of its own: it is ClearCLIPSegmentation with model_type 'vanilla'
(q-k attention in VisionTransformer.custom_attn). Its default, ignore_residual False, keeps the last
block's residual and feed-forward branch; the repository's default (configs/base_config.py), ignore_residual
True, keeps the attention output alone (`--opt ignore_residual=true`): cases of both. The repository is run
as make_clearclip.py runs it (same loading, stubs, float32 on the CPU, same cases and settings).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.parity import harness  # noqa: E402
from tools.parity.make_clearclip import (  # noqa: E402
    COMMIT,
    PERTURBATION,
    REFERENCE_DID,
    REPOSITORY,
    SEED,
    WHOLE_CASES,
    ClearCLIPRepository,
    dense_cases,
    weights_meta,
    whole_cases,
)

# case-name suffix -> (variant options, whole-image cases); the method's default first. With the attention
# output alone, the voc21 case's probabilities stay below its prob_thd 0.5 everywhere (one class predicted),
# so that variant's whole-image case is context59 only.
VARIANTS = {
    "": ({"ignore_residual": False}, list(WHOLE_CASES)),
    "_ignore_residual": ({"ignore_residual": True}, ["whole_context59"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="git directory of the fetched repository")
    parser.add_argument("--commit", default=COMMIT)
    parser.add_argument("--out", type=Path, default=harness.FIXTURES / "clip")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parity-clip-"))
    weights = harness.random_openai_clip(SEED, PERTURBATION)
    clip_path = harness.save_weights(weights, work / "clip.pt")
    repository = ClearCLIPRepository(args.repo, args.commit, clip_path)
    cases, arrays = [], {}
    for suffix, (variant, whole_names) in VARIANTS.items():
        dense, dense_arrays = dense_cases(repository, work, "vanilla", variant, suffix)
        whole, whole_arrays = whole_cases(repository, work, "vanilla", variant, whole_names, suffix)
        cases += dense + whole
        arrays.update(dense_arrays)
        arrays.update(whole_arrays)

    meta = {
        "method": "clip", "repository": REPOSITORY, "commit": args.commit,
        "script": "tools/parity/make_clip.py", "weights": weights_meta(weights, SEED, PERTURBATION),
        "reference_did": REFERENCE_DID + (
            " model_type 'vanilla' (q-k attention); ignore_residual False (the method's default: "
            "x + attention, then + mlp(ln_2(.))) and True (cases *_ignore_residual: the attention output alone)."
        ),
        "templates": "protocols/templates/imagenet80.txt",
        "protocol": "clearclip (its method_settings and background values; the method has no protocol of its own)",
        "cases": cases,
    }
    harness.write_fixture(args.out, meta, arrays)
    print(f"wrote {args.out} from {REPOSITORY}@{args.commit} ({repository.source})")
    for entry in cases:
        print(f"  {entry['case']}: {entry['classes_predicted']} classes predicted, {entry.get('tie_pixels')} ties")


if __name__ == "__main__":
    main()
