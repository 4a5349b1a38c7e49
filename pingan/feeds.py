"""The feed registry: which sources exist, how their categories become envelope types, how they weigh.

A feed is a :class:`FeedSpec`. Three places contribute, in this order:

builtin
    The four feeds of ``schemas/payloads.py`` (call110, camera, checkpoint, app_report), with their mapping
    functions in ``producers/adapters/``.
plugin
    Every entry point in the group ``pingan.feeds`` (see :data:`ENTRY_POINT_GROUP`) of any installed
    distribution. An entry point resolves to a FeedSpec or to a callable returning one; its name must be the
    feed's name. This is how ops add a feed without touching ``streams/``: ship a small package whose
    ``pyproject.toml`` declares ``[project.entry-points."pingan.feeds"] alarm_column = "pkg.mod:feed"``.
config
    ``deploy/config/feeds.toml`` (``settings.feeds_config_path``). A ``[feeds.NAME]`` section configures a
    builtin or plugin feed (topic, category table, index weights, time zone, field names, place table,
    severity from a record field); a section for a name nobody registered defines a feed by itself, either
    with a ``[record]`` table (which fields hold the id, category, time and device: the generic device
    mapper and :class:`pingan.schemas.payloads.DevicePayload`, no code at all) or by naming its ``payload_model``
    (and usually its ``mapper``) as ``"module:attribute"``.

The configuration is layered on the code's defaults: ``types`` and ``fields`` entries are added to (and
override) the spec's own, ``index`` replaces it, ``topic``/``timezone``/``description`` replace theirs.

:class:`FeedRules` is the one validation every way in applies to an envelope (``parse_event`` plus the feed's
type table and a whole-number severity): the gateway, the webhooks and the adapters call it, and so should
the worker. The worker also uses :func:`index_document` (risk-index.toml plus the ``index`` sections of
feeds it does not already cover). Producers use the spec's ``mapping``, ``mapper``, ``places`` and
``severity_rule`` through ``producers/adapters``. :func:`feed_counts` and :func:`metric_samples` turn the
store's per-feed counts into what the API and ``/metrics`` show.

Nothing here imports a mapper or connects anywhere: mappers given as strings are imported on first use, so
the worker can load the registry without importing producer code.
"""

from __future__ import annotations

import copy
import csv
import functools
import hashlib
import importlib
import importlib.metadata
import io
import re
import unicodedata
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import orjson
from pydantic import BaseModel

from pingan.config_files import read_toml
from pingan.errors import ConfigError, InvalidEvent
from pingan.index.scoring import SourceConfig, parse_breakpoints
from pingan.schemas.envelope import EnvelopeReader, Event, parse_event
from pingan.schemas.payloads import SOURCE_PAYLOADS, DevicePayload

if TYPE_CHECKING:
    from pingan.settings import Settings

__all__ = [
    "BUILTIN_FEEDS",
    "DEVICE_MAPPER",
    "ENTRY_POINT_GROUP",
    "NAME_PATTERN",
    "FeedCounts",
    "FeedRules",
    "FeedSpec",
    "Mapper",
    "Place",
    "PlaceTable",
    "RecordFields",
    "SeverityRule",
    "TypeMapping",
    "build_feeds",
    "category_key",
    "feed_counts",
    "feeds_without_index",
    "index_document",
    "load_feeds",
    "merge_index_document",
    "metric_samples",
    "payload_models",
    "read_feeds_config",
    "read_place_table",
    "read_risk_document",
]

ENTRY_POINT_GROUP: Final = "pingan.feeds"
DEFAULT_TIMEZONE: Final = "Asia/Shanghai"
# The envelope's own rule for a source or type name (pingan.schemas.envelope.Name).
NAME_PATTERN: Final = re.compile(r"^[a-z0-9_]{1,64}$")
ORIGINS: Final = ("builtin", "plugin", "config")

# A mapper turns one raw record (a dict decoded from JSON or a CSV row) into an envelope dict. Its second
# argument is a pingan.producers.adapters.base.MapContext; typed loosely here so pingan does not import producers.
Mapper = Callable[[Mapping[str, Any], Any], dict[str, Any]]


def category_key(value: object) -> str:
    """How a source category is compared with the table: NFKC (full-width -> ASCII), trimmed, case-folded."""
    return unicodedata.normalize("NFKC", str(value)).strip().casefold()


@dataclass(frozen=True, slots=True)
class TypeMapping:
    """What one source category becomes in the envelope."""

    type: str
    severity: int


@dataclass(frozen=True, slots=True)
class Place:
    """Where a place-table entry is: lon/lat, a grid id, or both."""

    lon: float | None = None
    lat: float | None = None
    grid_id: str | None = None

    def as_envelope(self) -> dict[str, Any]:
        """The envelope's ``location`` and/or ``grid_id``."""
        placed: dict[str, Any] = {}
        if self.lon is not None and self.lat is not None:
            placed["location"] = {"lon": self.lon, "lat": self.lat}
        if self.grid_id is not None:
            placed["grid_id"] = self.grid_id
        return placed


@dataclass(frozen=True)
class PlaceTable:
    """A feed's own gazetteer: addresses, building names or device ids -> a place, read once at start-up.

    ``match`` are the record's fields whose value is looked up, in order (the first one found in the table
    wins); keys compare as :func:`category_key` does (full-width, case and surrounding spaces ignored).
    """

    path: str
    match: tuple[str, ...]
    entries: Mapping[str, Place]

    def lookup(self, record: Mapping[str, Any]) -> Place | None:
        for name in self.match:
            value = record.get(name)
            if value is None or isinstance(value, dict | list):
                continue
            found = self.entries.get(category_key(value))
            if found is not None:
                return found
        return None


@dataclass(frozen=True)
class SeverityRule:
    """Severity from a field of the record (a device's own alarm level) instead of the category table."""

    field: str
    values: Mapping[str, int]

    def severity(self, record: Mapping[str, Any], feed: str) -> int | None:
        """The severity the record's field gives; None when the record has no such field. Raises
        InvalidEvent("unknown_severity") for a value the table does not list."""
        value = record.get(self.field)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, bool | dict | list):
            raise InvalidEvent("unknown_severity", f"{self.field} {value!r} is not a level", self.field)
        severity = self.values.get(category_key(value))
        if severity is None:
            known = ", ".join(sorted(self.values))
            raise InvalidEvent(
                "unknown_severity",
                f"{self.field} {value!r} is not in [feeds.{feed}.severity.values] (known: {known})",
                self.field,
            )
        return severity


@dataclass(frozen=True)
class RecordFields:
    """Which fields of a raw record the generic mapper reads, for a feed defined only in the feeds config.

    Each is a tuple of field names tried in order. ``keep`` are copied into the payload as they are.
    """

    id: tuple[str, ...]
    category: tuple[str, ...]
    time: tuple[str, ...]
    device: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedSpec:
    """One registered feed (source).

    ``mapping`` keys are :func:`category_key` spellings of the source's own categories. ``mapper`` is a
    callable or a ``"module:function"`` string imported on first use; a feed without one can still be
    validated by the worker (events may come from the ingest gateway or a producer in another language),
    it just cannot be tailed by ``pingan producers``. ``topic`` None means the events topic; otherwise it
    may use ``{prefix}`` for the settings' topic prefix. ``fields`` maps a canonical field name to extra
    column names to look for in raw records (CAD exports name their columns in many ways).
    ``personal_fields`` are raw field names holding personal identifiers, pseudonymised in dead letters in
    addition to the ones every adapter knows. ``places`` is the feed's place table (a record with neither
    lon/lat nor a grid is placed by it), ``severity_rule`` takes the severity from a field of the record
    instead of the category table, and ``record`` says which fields a feed defined only in the feeds config
    reads (its mapper is the generic :func:`pingan.producers.adapters.device.map_record`).
    """

    name: str
    payload_model: type[BaseModel]
    description: str = ""
    mapping: Mapping[str, TypeMapping] = field(default_factory=dict)
    index: SourceConfig | None = None
    mapper: Mapper | str | None = None
    topic: str | None = None
    timezone: str = DEFAULT_TIMEZONE
    fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    personal_fields: tuple[str, ...] = ()
    places: PlaceTable | None = None
    severity_rule: SeverityRule | None = None
    record: RecordFields | None = None
    origin: str = "plugin"
    registered_by: str = ""  # the entry point or file that registered it, for error messages and `list`

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ConfigError(f"feed name {self.name!r} must be 1-64 characters of [a-z0-9_]")
        if not (isinstance(self.payload_model, type) and issubclass(self.payload_model, BaseModel)):
            raise ConfigError(f"feed {self.name}: payload_model must be a pydantic BaseModel subclass")
        if self.origin not in ORIGINS:
            raise ConfigError(f"feed {self.name}: origin must be one of {ORIGINS}")
        # Frozen all the way down: a spec is shared by every record of a feed.
        object.__setattr__(self, "mapping", MappingProxyType({category_key(k): v for k, v in self.mapping.items()}))
        object.__setattr__(self, "fields", MappingProxyType({k: tuple(v) for k, v in self.fields.items()}))

    @property
    def types(self) -> frozenset[str]:
        """The envelope types this feed's events may have: the targets of its category table."""
        return frozenset(mapping.type for mapping in self.mapping.values())

    @property
    def adapter_name(self) -> str:
        """How dead letters name the mapping function ("module:function"), empty when there is none."""
        if self.mapper is None:
            return ""
        if isinstance(self.mapper, str):
            return self.mapper
        return f"{getattr(self.mapper, '__module__', '?')}:{getattr(self.mapper, '__qualname__', '?')}"

    def topic_name(self, settings: Settings) -> str:
        if self.topic is None:
            return settings.topic_events
        return self.topic.format(prefix=settings.topic_prefix)

    def resolve_mapper(self) -> Mapper:
        if self.mapper is None:
            raise ConfigError(f"feed {self.name} has no mapper: it cannot be produced by pingan producers")
        if isinstance(self.mapper, str):
            return _import_attribute(self.mapper, f"the mapper of feed {self.name}")
        return self.mapper


# --- built-in feeds ------------------------------------------------------------------------------------------


def _builtin_specs() -> dict[str, FeedSpec]:
    described = {
        "call110": ("110 emergency-call incidents (CAD export)", "pingan.producers.adapters.call110:map_incident"),
        "camera": ("video-analytics alerts from fixed cameras (webhook)", "pingan.producers.adapters.camera:map_alert"),
        "checkpoint": ("vehicle and person passes at checkpoints", "pingan.producers.adapters.checkpoint:map_pass"),
        "app_report": ("grid-worker and citizen reports", "pingan.producers.adapters.app_report:map_report"),
    }
    return {
        name: FeedSpec(
            name, model, described[name][0], mapper=described[name][1], origin="builtin", registered_by="schemas"
        )
        for name, model in SOURCE_PAYLOADS.items()
    }


BUILTIN_FEEDS: Final = ("call110", "camera", "checkpoint", "app_report")


# --- plugins ---------------------------------------------------------------------------------------------


def _describe(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    where = f" from {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {entry_point.name!r} ({entry_point.value}){where}"


def _plugin_spec(entry_point: importlib.metadata.EntryPoint) -> FeedSpec:
    what = _describe(entry_point)
    try:
        target = entry_point.load()
    except Exception as exc:  # a plugin can fail in any way while importing; name it and stop
        raise ConfigError(f"feed plugin {what} failed to load: {exc!r}") from exc
    if not isinstance(target, FeedSpec):
        if not callable(target):
            raise ConfigError(f"feed plugin {what} is neither a FeedSpec nor a callable returning one")
        try:
            target = target()
        except ConfigError as exc:
            raise ConfigError(f"feed plugin {what}: {exc}") from exc
        except Exception as exc:
            raise ConfigError(f"feed plugin {what} raised while building its FeedSpec: {exc!r}") from exc
        if not isinstance(target, FeedSpec):
            raise ConfigError(f"feed plugin {what} returned {type(target).__name__}, not a FeedSpec")
    if target.name != entry_point.name:
        raise ConfigError(f"feed plugin {what} defines feed {target.name!r}; the entry point must be named alike")
    return replace(target, origin="plugin", registered_by=what)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _add_plugins(feeds: dict[str, FeedSpec], entry_points: Iterable[importlib.metadata.EntryPoint]) -> None:
    seen: dict[str, importlib.metadata.EntryPoint] = {}
    for entry_point in entry_points:
        name = entry_point.name
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"feed plugin {_describe(entry_point)}: the name must be 1-64 characters of [a-z0-9_]")
        if name in seen:
            if seen[name].value == entry_point.value:
                continue  # one distribution found twice on sys.path: the same plugin, not a clash
            raise ConfigError(
                f"feed {name!r} is registered twice: {_describe(seen[name])} and {_describe(entry_point)}"
            )
        if name in feeds:
            raise ConfigError(f"feed plugin {_describe(entry_point)} clashes with the built-in feed {name!r}")
        seen[name] = entry_point
        feeds[name] = _plugin_spec(entry_point)


# --- configuration -------------------------------------------------------------------------------------------

_FEED_KEYS: Final = frozenset(
    {
        "description", "topic", "timezone", "types", "index", "fields", "personal_fields", "payload_model", "mapper",
        "places", "severity", "record",
    }
)  # fmt: skip
_PLACES_KEYS: Final = frozenset({"file", "match"})
_SEVERITY_KEYS: Final = frozenset({"field", "values"})
_RECORD_KEYS: Final = frozenset({"id", "category", "time", "device", "keep"})
# The generic mapper of feeds defined only by a [feeds.NAME.record] section.
DEVICE_MAPPER: Final = "pingan.producers.adapters.device:map_record"
_INDEX_KEYS: Final = frozenset({"default_weight", "type_weights", "breakpoints"})


def _import_attribute(path: str, what: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{what} must be written 'package.module:attribute', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(f"{what}: cannot import {module_name!r}: {exc!r}") from exc
    try:
        target = module
        for part in attribute.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise ConfigError(f"{what}: module {module_name!r} has no attribute {attribute!r}") from None
    return target


def _types(where: str, raw: Any) -> dict[str, TypeMapping]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table of category = {{ type = ..., severity = ... }}")
    table: dict[str, TypeMapping] = {}
    spelled: dict[str, str] = {}
    for category, target in raw.items():
        entry = f"{where}.{category!r}"
        if not isinstance(target, Mapping) or set(target) != {"type", "severity"}:
            raise ConfigError(f'{entry} must be {{ type = "...", severity = 1..5 }}')
        event_type, severity = target["type"], target["severity"]
        if not isinstance(event_type, str) or not NAME_PATTERN.match(event_type):
            raise ConfigError(f"{entry}: type {event_type!r} must be 1-64 characters of [a-z0-9_]")
        if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
            raise ConfigError(f"{entry}: severity must be an integer from 1 to 5, got {severity!r}")
        key = category_key(category)
        if not key:
            raise ConfigError(f"{where} has an empty category")
        if key in spelled:
            raise ConfigError(f"{where}: {spelled[key]!r} and {category!r} are the same category once normalised")
        spelled[key] = category
        table[key] = TypeMapping(event_type, severity)
    return table


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    return float(value)


def _index(where: str, raw: Any) -> SourceConfig:
    """Checked as the worker's parse_config checks risk-index.toml's sections (the same breakpoint rules)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - _INDEX_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_INDEX_KEYS)}")
    if "breakpoints" not in raw:
        raise ConfigError(f"{where} needs breakpoints = [[0.0, 0.0], [count, index], ...]")
    weights = raw.get("type_weights", {})
    if not isinstance(weights, Mapping):
        raise ConfigError(f"{where}.type_weights must be a table of type = weight")
    points = parse_breakpoints(where, raw["breakpoints"])
    return SourceConfig(
        default_weight=_number(f"{where}.default_weight", raw.get("default_weight", 1.0)),
        type_weights={str(k): _number(f"{where}.type_weights.{k}", v) for k, v in weights.items()},
        breakpoints=points,
    )


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _names(where: str, value: Any) -> tuple[str, ...]:
    """A field name or a non-empty list of them."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{where} must be a field name or a list of them, got {value!r}")
    return tuple(names)


def _record_fields(where: str, raw: Any) -> RecordFields:
    if not isinstance(raw, Mapping):
        raise ConfigError(f'{where} must be a table such as {{ id = "alarm_id", category = "type", time = "at" }}')
    unknown = set(raw) - _RECORD_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_RECORD_KEYS)}")
    missing = [key for key in ("id", "category", "time") if key not in raw]
    if missing:
        raise ConfigError(f"{where} needs {', '.join(missing)}: which record fields hold them")
    return RecordFields(
        id=_names(f"{where}.id", raw["id"]),
        category=_names(f"{where}.category", raw["category"]),
        time=_names(f"{where}.time", raw["time"]),
        device=_names(f"{where}.device", raw["device"]) if "device" in raw else (),
        keep=_names(f"{where}.keep", raw["keep"]) if "keep" in raw else (),
    )


def _severity_rule(where: str, raw: Any) -> SeverityRule:
    if not isinstance(raw, Mapping) or set(raw) != _SEVERITY_KEYS:
        raise ConfigError(f'{where} must be {{ field = "level", values = {{ "1" = 2, "2" = 3, ... }} }}')
    field_name = _string(f"{where}.field", raw["field"])
    values = raw["values"]
    if not isinstance(values, Mapping) or not values:
        raise ConfigError(f"{where}.values must be a table of device value = severity 1..5")
    table: dict[str, int] = {}
    for value, severity in values.items():
        if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
            raise ConfigError(f"{where}.values.{value!r}: severity must be an integer from 1 to 5, got {severity!r}")
        key = category_key(value)
        if key in table:
            raise ConfigError(f"{where}.values: {value!r} is listed twice once normalised")
        table[key] = severity
    return SeverityRule(field_name, MappingProxyType(table))


def _coordinate(where: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"{where}: {value} is outside {low}..{high}")
    return value


def read_place_table(path: Path, match: tuple[str, ...]) -> PlaceTable:
    """A CSV place table: a ``key`` column and ``lon``,``lat`` and/or ``grid_id``. Raises ConfigError saying
    which line is wrong; nothing is guessed."""
    where = f"place table {path}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist (a path relative to the feeds config's folder)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {exc}") from None
    rows = csv.DictReader(io.StringIO(text))
    columns = {name.strip() for name in rows.fieldnames or ()}
    if "key" not in columns or not ({"lon", "lat"} <= columns or "grid_id" in columns):
        raise ConfigError(f"{where} needs a header with key and lon,lat and/or grid_id; it has {sorted(columns)}")
    entries: dict[str, Place] = {}
    for number, values in enumerate(rows, start=2):
        line = f"{where} line {number}"
        cells = {k.strip(): (v or "").strip() for k, v in values.items() if k is not None}
        key = category_key(cells.get("key", ""))
        if not key:
            raise ConfigError(f"{line}: the key is empty")
        if key in entries:
            raise ConfigError(f"{line}: key {cells['key']!r} is listed twice once normalised")
        lon_text, lat_text, grid = cells.get("lon", ""), cells.get("lat", ""), cells.get("grid_id", "")
        if bool(lon_text) != bool(lat_text):
            raise ConfigError(f"{line}: give both lon and lat, or neither")
        if not lon_text and not grid:
            raise ConfigError(f"{line}: {cells['key']!r} has neither lon/lat nor a grid_id")
        entries[key] = Place(
            _coordinate(f"{line} lon", lon_text, -180.0, 180.0) if lon_text else None,
            _coordinate(f"{line} lat", lat_text, -90.0, 90.0) if lat_text else None,
            grid or None,
        )
    if not entries:
        raise ConfigError(f"{where} has no entries")
    return PlaceTable(str(path), match, MappingProxyType(entries))


def _places(where: str, raw: Any, config_dir: Path) -> PlaceTable:
    if not isinstance(raw, Mapping) or set(raw) != _PLACES_KEYS:
        raise ConfigError(f'{where} must be {{ file = "places.csv", match = ["device_id", "address"] }}')
    path = Path(_string(f"{where}.file", raw["file"]))
    return read_place_table(path if path.is_absolute() else config_dir / path, _names(f"{where}.match", raw["match"]))


def _apply_section(
    name: str, section: Mapping[str, Any], base: FeedSpec | None, source: str, config_dir: Path = Path()
) -> FeedSpec:
    where = f"{source}: [feeds.{name}]"
    unknown = set(section) - _FEED_KEYS
    if unknown:
        raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_FEED_KEYS)}")
    record = _record_fields(f"{where}.record", section["record"]) if "record" in section else None
    if base is None:
        if "payload_model" in section:
            model = _import_attribute(
                _string(f"{where}.payload_model", section["payload_model"]), f"{where} payload_model"
            )
            mapper = _string(f"{where}.mapper", section["mapper"]) if "mapper" in section else None
        elif record is not None:
            # Defined here alone: the generic device payload and mapper, driven by [record].
            model, mapper = DevicePayload, _string(f"{where}.mapper", section.get("mapper", DEVICE_MAPPER))
        else:
            raise ConfigError(
                f"{where}: no built-in feed or installed plugin is called {name!r}; describe its records in a "
                f"[feeds.{name}.record] section, register it by entry point (group {ENTRY_POINT_GROUP!r}), or "
                'give payload_model = "module:Model" here'
            )
        base = FeedSpec(name, model, mapper=mapper, origin="config", registered_by=source)
    elif "payload_model" in section or "mapper" in section or record is not None:
        raise ConfigError(f"{where}: payload_model, mapper and record belong to new feeds; {name} is {base.origin}")

    changes: dict[str, Any] = {}
    if "description" in section:
        changes["description"] = _string(f"{where}.description", section["description"])
    if "topic" in section:
        topic = _string(f"{where}.topic", section["topic"])
        try:
            topic.format(prefix="")
        except (KeyError, IndexError, ValueError):
            raise ConfigError(f"{where}.topic may only use the placeholder {{prefix}}, got {topic!r}") from None
        changes["topic"] = topic
    if "timezone" in section:
        changes["timezone"] = _string(f"{where}.timezone", section["timezone"])
    if "types" in section:
        changes["mapping"] = {**base.mapping, **_types(f"{where}.types", section["types"])}
    if "index" in section:
        changes["index"] = _index(f"{where}.index", section["index"])
    if "fields" in section:
        raw_fields = section["fields"]
        if not isinstance(raw_fields, Mapping):
            raise ConfigError(f'{where}.fields must be a table of field = ["column", ...]')
        extra = {}
        for canonical, names in raw_fields.items():
            names = [names] if isinstance(names, str) else names
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ConfigError(f"{where}.fields.{canonical} must be a column name or a list of them")
            extra[str(canonical)] = tuple(names)
        changes["fields"] = {**base.fields, **extra}
    if "personal_fields" in section:
        names = section["personal_fields"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}.personal_fields must be a list of field names")
        changes["personal_fields"] = (*base.personal_fields, *names)
    if "places" in section:
        changes["places"] = _places(f"{where}.places", section["places"], config_dir)
    if "severity" in section:
        changes["severity_rule"] = _severity_rule(f"{where}.severity", section["severity"])
    if record is not None:
        changes["record"] = record
    spec = replace(base, **changes)
    if spec.record is not None and not spec.mapping:
        raise ConfigError(f"{where}: a feed defined by [record] needs a [feeds.{name}.types] table")
    _check_timezone(spec)
    return spec


def _check_timezone(spec: FeedSpec) -> None:
    try:
        zoneinfo.ZoneInfo(spec.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"feed {spec.name}: unknown time zone {spec.timezone!r} (an IANA name such as Asia/Shanghai; "
            "install the tzdata package where the system has no zone files)"
        ) from None


def read_feeds_config(path: Path) -> dict[str, Any]:
    document = read_toml(path, "feeds config", hint="settings.feeds_config_path")
    unknown = set(document) - {"feeds"}
    if unknown:
        raise ConfigError(f"feeds config {path}: unknown top-level keys {sorted(unknown)}; feeds go under [feeds.NAME]")
    sections = document.get("feeds", {})
    if not isinstance(sections, dict):
        raise ConfigError(f"feeds config {path}: feeds must be a table of [feeds.NAME] sections")
    return sections


def build_feeds(
    sections: Mapping[str, Any],
    entry_points: Iterable[importlib.metadata.EntryPoint],
    *,
    source: str = "feeds.toml",
    config_dir: Path = Path(),
) -> dict[str, FeedSpec]:
    """The registry from parsed config sections and entry points (what :func:`load_feeds` reads).
    ``config_dir`` is where relative paths in the sections (place tables) start."""
    feeds = _builtin_specs()
    _add_plugins(feeds, entry_points)
    for name, section in sections.items():
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"{source}: feed name {name!r} must be 1-64 characters of [a-z0-9_]")
        if not isinstance(section, Mapping):
            raise ConfigError(f"{source}: feeds.{name} must be a table")
        feeds[name] = _apply_section(name, section, feeds.get(name), source, config_dir)
    return dict(sorted(feeds.items()))


def load_feeds(
    settings: Settings, *, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None
) -> dict[str, FeedSpec]:
    """Every feed: built-in, installed plugins (entry points), then feeds.toml. Raises ConfigError."""
    sections = read_feeds_config(settings.feeds_config_path)
    points = _entry_points() if entry_points is None else list(entry_points)
    path = settings.feeds_config_path
    return build_feeds(sections, points, source=str(path), config_dir=path.parent)


def payload_models(feeds: Mapping[str, FeedSpec]) -> dict[str, type[BaseModel]]:
    """What the worker's parse_event needs: source name -> payload model."""
    return {name: spec.payload_model for name, spec in feeds.items()}


# --- the one validation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedRules:
    """The checks every way in applies to an envelope, built once from the registry.

    :meth:`validate` is :func:`pingan.schemas.envelope.parse_event` (shape, payload model, time ranges, size, a
    whole-number ``severity``, not ``"4"`` or ``4.0``) plus the feed's own rule: ``type`` one of the types of
    the feed's category table (a feed with an empty table accepts any type). The worker, the
    ingest gateway and the adapters (tailer, webhooks, replay) all call it, so a record gets the same answer
    whichever way it comes in. Grid resolution comes after it (``pingan.grids.resolve_grid``).
    """

    payload_models: Mapping[str, type[BaseModel]]
    types: Mapping[str, frozenset[str]]
    max_bytes: int = 64 * 1024
    max_future: timedelta = timedelta(minutes=5)

    @classmethod
    def of(
        cls, feeds: Mapping[str, FeedSpec], *, max_bytes: int = 64 * 1024, max_future: timedelta = timedelta(minutes=5)
    ) -> FeedRules:
        return cls(
            MappingProxyType(payload_models(feeds)),
            MappingProxyType({name: spec.types for name, spec in feeds.items()}),
            max_bytes,
            max_future,
        )

    @classmethod
    def for_settings(cls, settings: Settings, feeds: Mapping[str, FeedSpec]) -> FeedRules:
        return cls.of(
            feeds, max_bytes=settings.max_event_bytes, max_future=timedelta(seconds=settings.max_future_seconds)
        )

    def validate(self, raw: bytes, *, now: datetime) -> Event:
        """The event in ``raw``, or InvalidEvent with kind, field and reason."""
        # (EnvelopeReader on one envelope measured no faster: the models' work, not the calls, is the cost.)
        event = parse_event(
            raw, now=now, max_bytes=self.max_bytes, max_future=self.max_future, payload_models=self.payload_models
        )
        if not self._type_allowed(event):
            allowed = self.types[event.source]
            raise InvalidEvent(
                "unknown_type",
                f"type {event.type!r} is not a type of feed {event.source} (its [feeds.{event.source}.types] "
                f"table gives: {', '.join(sorted(allowed))})",
                "type",
            )
        return event

    def validate_all(
        self, raws: Sequence[bytes], documents: Sequence[Any], *, now: datetime
    ) -> list[Event | InvalidEvent]:
        """Per envelope, its event or why it is refused, as :meth:`validate` answers for each: ``raws`` are the
        envelopes' bytes, ``documents`` the same decoded (an event batch record's, pingan.schemas.batch). The
        envelopes are checked in one pass (EnvelopeReader), and only those it does not accept one at a time."""
        fast = _reader(self.payload_models).events(documents, now=now, max_future=self.max_future)
        out: list[Event | InvalidEvent] = []
        for raw, event in zip(raws, fast, strict=True):
            if event is not None and len(raw) <= self.max_bytes and self._type_allowed(event):
                out.append(event)
                continue
            try:
                out.append(self.validate(raw, now=now))
            except InvalidEvent as exc:
                out.append(exc)
        return out

    def _type_allowed(self, event: Event) -> bool:
        allowed = self.types.get(event.source)
        return not allowed or event.type in allowed


@functools.lru_cache(maxsize=16)
def _reader_of(models: tuple[tuple[str, type[BaseModel]], ...]) -> EnvelopeReader:
    return EnvelopeReader(dict(models))


def _reader(payload_models: Mapping[str, type[BaseModel]]) -> EnvelopeReader:
    """One reader per set of payload models (building one costs a validator's compilation, ~0.1 s)."""
    return _reader_of(tuple(sorted(payload_models.items())))


# --- per-feed counts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedCounts:
    """What ops want to know about a feed: how many events were stored, how many records were
    dead-lettered (by kind), and when it was last seen (its latest event or dead letter)."""

    feed: str
    accepted: int = 0
    dead_lettered: Mapping[str, int] = field(default_factory=dict)
    last_seen: datetime | None = None

    @property
    def dead_lettered_total(self) -> int:
        return sum(self.dead_lettered.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "feed": self.feed,
            "accepted": self.accepted,
            "dead_lettered": self.dead_lettered_total,
            "dead_lettered_by_kind": dict(self.dead_lettered),
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
        }


def feed_counts(
    feeds: Iterable[str],
    accepted: Iterable[tuple[str, int, datetime]],
    dead_lettered: Iterable[tuple[str, str, int, datetime]],
) -> list[FeedCounts]:
    """Counts per feed from ``pingan.store.events.count_by_source`` and
    ``pingan.store.dead_letters.count_by_feed_and_kind`` rows. Every registered feed is listed (zeros for
    a silent one), then any other name found in the tables; dead letters whose feed is unknown (not JSON,
    no source) are under feed ''."""
    stored: dict[str, tuple[int, datetime | None]] = {name: (count, last) for name, count, last in accepted}
    kinds: dict[str, dict[str, int]] = {}
    last_letter: dict[str, datetime] = {}
    for name, kind, count, last in dead_lettered:
        kinds.setdefault(name, {})[kind] = kinds.get(name, {}).get(kind, 0) + count
        last_letter[name] = max(last, last_letter.get(name, last))
    names = list(dict.fromkeys([*feeds, *sorted(stored), *sorted(kinds)]))
    counts = []
    for name in names:
        count, last_event = stored.get(name, (0, None))
        seen = [moment for moment in (last_event, last_letter.get(name)) if moment is not None]
        counts.append(FeedCounts(name, count, dict(sorted(kinds.get(name, {}).items())), max(seen, default=None)))
    return counts


def metric_samples(counts: Iterable[FeedCounts]) -> list[tuple[str, dict[str, str], float]]:
    """The counts as Prometheus samples ``(name, labels, value)`` for ``/metrics``:
    ``pingan_feed_accepted_events{feed}``, ``pingan_feed_dead_letters{feed,kind}`` and
    ``pingan_feed_last_seen_seconds{feed}`` (Unix time; absent for a feed never seen)."""
    samples: list[tuple[str, dict[str, str], float]] = []
    for count in counts:
        samples.append(("pingan_feed_accepted_events", {"feed": count.feed}, float(count.accepted)))
        for kind, number in count.dead_lettered.items():
            samples.append(("pingan_feed_dead_letters", {"feed": count.feed, "kind": kind}, float(number)))
        if count.last_seen is not None:
            samples.append(("pingan_feed_last_seen_seconds", {"feed": count.feed}, count.last_seen.timestamp()))
    return samples


# --- the risk index ----------------------------------------------------------------------------------------


def merge_index_document(risk_doc: Mapping[str, Any], feeds: Mapping[str, FeedSpec]) -> dict[str, Any]:
    """risk-index.toml's document plus ``sources.NAME`` for every feed with an index section it lacks.

    risk-index.toml wins where both define a source: it is the reviewed, versioned file. When sections are
    added the version gets a suffix naming them and a digest of their values, so risk values computed with
    a feed's weights say so and a change of those weights changes the version.
    """
    document = copy.deepcopy(dict(risk_doc))
    sources = document.setdefault("sources", {})
    added = {
        name: spec.index.as_document()
        for name, spec in sorted(feeds.items())
        if spec.index is not None and name not in sources
    }
    if added:
        sources.update(added)
        digest = hashlib.blake2b(orjson.dumps(added, option=orjson.OPT_SORT_KEYS), digest_size=4).hexdigest()
        document["version"] = f"{document.get('version', '')}+{'.'.join(added)}.{digest}"
    return document


def feeds_without_index(index_doc: Mapping[str, Any], feeds: Mapping[str, FeedSpec]) -> list[str]:
    """Feeds whose events weigh nothing in the index (no section anywhere): worth a warning at start-up."""
    sources = index_doc.get("sources", {})
    return [name for name in feeds if name not in sources]


def read_risk_document(path: Path) -> dict[str, Any]:
    return read_toml(path, "risk index config")


def index_document(settings: Settings, feeds: Mapping[str, FeedSpec]) -> dict[str, Any]:
    """The document the worker gives ``pingan.index.scoring.parse_config``: risk-index.toml + feed sections."""
    return merge_index_document(read_risk_document(settings.risk_config_path), feeds)
