"""Unit tests run on the shipped defaults, whatever ``PINGAN_*`` the developer's environment holds."""

from __future__ import annotations

import pytest

from pingan.settings import Settings
from tests.support.defaults import default_settings


@pytest.fixture
def settings() -> Settings:
    """The default settings (the environment is not read); tests needing others use ``model_copy``."""
    return default_settings()
