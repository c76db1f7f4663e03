"""The last gate before text enters the HAProxy config: a small character set, nothing else.

Every value the renderers write passed a grammar already (grammar.py) or comes from the
proxy's own settings; this check holds anyway, so a bug upstream cannot smuggle a quote, a
space, a `#` or a newline into the config.
"""
from __future__ import annotations

import re

_SAFE = re.compile(r"^[A-Za-z0-9_.:/~+=,-]*$")


class RenderError(ValueError):
    """A value that should have been refused upstream reached the renderer."""


def check_safe(value: str, what: str) -> str:
    if not _SAFE.fullmatch(value):
        raise RenderError(f"{what}: {value!r} holds characters that never go into a config")
    return value
