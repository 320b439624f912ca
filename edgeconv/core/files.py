"""Reading the small structured files users hand us (profiles, run configs, reports) with one-line errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from edgeconv.core.errors import ConfigError


def read_structured(path: str | Path, what: str, fmt: str | None = None) -> dict[str, Any]:
    """Parse a .toml or .json file (``fmt`` overrides the suffix); unreadable or malformed files become a
    ConfigError naming ``what``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from e
    try:
        return json.loads(text) if (fmt or path.suffix.lstrip(".")) == "json" else tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid JSON: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {path} is not valid TOML: {e}") from e
