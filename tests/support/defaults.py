"""What tests build from the shipped configuration, the same whatever the developer's environment holds.

``Settings()`` reads ``PINGAN_*`` from the environment: a developer with ``PINGAN_TOPIC_PARTITIONS=8`` set for
a demo would otherwise run the tests on other settings than CI. ``default_settings`` takes the defaults and
the given overrides only. The registry and the index are loaded once per test process and never mutated.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from pingan.feeds import load_feeds
from pingan.grids import GridRegistry
from pingan.index.loading import load_index
from pingan.index.scoring import IndexConfig
from pingan.settings import Settings


class _DefaultsOnly(Settings):
    """Settings from the defaults and the constructor's arguments; the environment is not read."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def default_settings(**overrides: Any) -> Settings:
    return _DefaultsOnly(**overrides)


@cache
def shipped_registry() -> GridRegistry:
    """The demo district (deploy/data/grids.json)."""
    return GridRegistry.load(default_settings().grid_registry_path)


@cache
def shipped_index() -> IndexConfig:
    """The index the worker scores with on the shipped config (risk-index.toml plus the feeds' sections)."""
    settings = default_settings()
    return load_index(settings, load_feeds(settings)).config
