"""Reading the project's TOML configuration files, with errors that name the file and its purpose."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pingan.errors import ConfigError


def read_toml(path: Path, what: str, *, hint: str = "") -> dict[str, Any]:
    """The file as a dict; a ConfigError saying which file (``what``) is missing or malformed, and how to fix it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist{f' ({hint})' if hint else ''}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None
