"""The one way to load the risk index: risk-index.toml plus the index sections of the feeds, as the worker, the
API, the CLI and the tests all score with it. Reads the file named in the settings; raises ConfigError."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pingan.feeds import FeedSpec, feeds_without_index, index_document
from pingan.index.scoring import IndexConfig, parse_config
from pingan.index.spatial import SpatialConfig, parse_spatial
from pingan.settings import Settings


@dataclass(frozen=True)
class LoadedIndex:
    config: IndexConfig
    # The map's spatial term, from the same document (the API colours lifted scores with the worker's bands).
    spatial: SpatialConfig
    # Feeds with no index section anywhere: their events are stored but weigh nothing (worth a warning).
    unweighted_feeds: tuple[str, ...]


def load_index(settings: Settings, feeds: Mapping[str, FeedSpec]) -> LoadedIndex:
    document = index_document(settings, feeds)
    return LoadedIndex(parse_config(document), parse_spatial(document), tuple(feeds_without_index(document, feeds)))
