"""open_clip's log messages that say nothing to a user of this suite."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def random_init_notice_silenced() -> Iterator[None]:
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" warning while a model is created
    that the suite fills with weights itself (or builds random on purpose, with its own warning); any other open_clip
    message passes."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded for model")

    root = logging.getLogger()  # open_clip logs through the root logger (logging.warning)
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
