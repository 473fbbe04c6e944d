"""What the offline demo hands each method family, and the families' demo entries.

A family registers a function `DemoAssets -> constructor options` for each method that can run
on the synthetic world (a learning method trains and caches its tiny version there); `zsbench
demo` evaluates every registered method with those options. Methods without an entry sit it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DemoOptions = Callable[["DemoAssets"], dict[str, Any]]

_entries: dict[str, DemoOptions] = {}


@dataclass(frozen=True)
class DemoAssets:
    world: Path  # the generated synthetic world
    captions: Path  # its caption split (images + captions.jsonl)
    clip_model: str  # open_clip model name of the tiny CLIP
    clip_checkpoint: Path  # its weights, in open_clip's state-dict format
    weights_dir: Path  # where methods cache the tiny versions they train
    seed: int
    device: str
    progress: bool = True  # show training progress bars


def register_demo_options(method: str, options: DemoOptions) -> DemoOptions:
    """`options(assets)` gives the constructor options of registered method `method` in the demo."""
    _entries[method] = options
    return options


def demo_options_for(method: str) -> DemoOptions | None:
    """The method's demo entry (after the method packages were imported), or None."""
    return _entries.get(method)
