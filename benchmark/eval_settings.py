"""How one `zsbench eval` runs: where data and results live, batching, devices, resume and skips."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmark import paths

# An image's float32 class scores (MiB) beyond which the engine stitches, upsamples and reduces them a chunk of
# classes at a time (large vocabularies); `--score-memory`.
SCORE_MEMORY_MIB = 1024


@dataclass
class EvalSettings:
    data_root: Path = field(default_factory=paths.data_root)
    results_root: Path = field(default_factory=paths.results_root)
    batch_size: int = 16
    device: str = "cpu"
    limit: int | None = None
    allow_incomplete: bool = False
    skip_existing: bool = False
    workers: int = 0
    save_every_s: float = 60.0
    save_every_images: int | None = None
    skip_bad: bool = False
    save_vis: int = 0
    progress: bool = True
    shared_pass: bool = True  # benchmarks over the same images in one pass, where the method has the hooks
    compile: bool = False  # torch.compile the method's forward (recorded; changes fp32 rounding slightly)
    score_memory_mib: int = SCORE_MEMORY_MIB
