"""A small synthetic open world: caption pairs to train a tiny CLIP and a dense val split."""

from .examples import Example, render_example
from .writer import generate_world

__all__ = ["Example", "generate_world", "render_example"]
