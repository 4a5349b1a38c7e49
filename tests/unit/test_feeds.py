"""The feed registry: built-ins, entry-point plugins, the feeds config, and the index merge."""

from __future__ import annotations

import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pydantic import BaseModel

from pingan.errors import ConfigError
from pingan.feeds import (
    BUILTIN_FEEDS,
    FeedSpec,
    TypeMapping,
    build_feeds,
    feeds_without_index,
    load_feeds,
    merge_index_document,
    payload_models,
    read_feeds_config,
)
from pingan.index.loading import load_index
from pingan.index.scoring import SourceConfig, parse_config
from pingan.index.spatial import parse_spatial
from pingan.schemas.payloads import SOURCE_PAYLOADS, AppReportCategory, Call110Category, CameraAnalytic
from pingan.settings import Settings
from tests.plugins.alarm_column import FEEDS_TOML, AlarmColumnPayload
from tests.support.defaults import default_settings
from tests.support.plugins import write_dist_info

PLUGIN = "tests.plugins.alarm_column"


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name, value, "pingan.feeds")


def _sections(text: str) -> dict:
    return tomllib.loads(text).get("feeds", {})


def _settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "feeds.toml"
    path.write_text(text, encoding="utf-8")
    return default_settings(feeds_config_path=path)


# --- built-ins and the shipped config ------------------------------------------------------------------


def test_builtins_are_the_four_payload_models_with_the_shipped_tables(settings) -> None:
    feeds = load_feeds(settings, entry_points=[])
    assert tuple(sorted(feeds)) == tuple(sorted(BUILTIN_FEEDS)) == tuple(sorted(SOURCE_PAYLOADS))
    assert payload_models(feeds) == SOURCE_PAYLOADS
    assert {spec.origin for spec in feeds.values()} == {"builtin"}
    assert feeds["call110"].mapping["刑事"] == TypeMapping("criminal", 4)
    assert feeds["call110"].mapping["criminal"] == TypeMapping("criminal", 4)
    assert feeds["call110"].timezone == "Asia/Shanghai"
    assert all(spec.index is None for spec in feeds.values())  # risk-index.toml covers them


def test_shipped_tables_only_produce_types_the_payloads_accept(settings) -> None:
    feeds = load_feeds(settings, entry_points=[])
    allowed = {
        "call110": {c.value for c in Call110Category},
        "camera": {a.value for a in CameraAnalytic},
        "checkpoint": {"pass", "flagged_pass"},
        "app_report": {c.value for c in AppReportCategory},
    }
    for name, types in allowed.items():
        produced = {mapping.type for mapping in feeds[name].mapping.values()}
        assert produced == types, name  # every type reachable, none the payload would reject


def test_shipped_index_types_are_weighted(settings) -> None:
    """Every type the shipped tables produce has a weight in risk-index.toml (or its source's default)."""
    feeds = load_feeds(settings, entry_points=[])
    risk = tomllib.loads(settings.risk_config_path.read_text())
    for name, spec in feeds.items():
        section = risk["sources"][name]
        for mapping in spec.mapping.values():
            assert mapping.type in section.get("type_weights", {}) or "default_weight" in section


# --- plugins by entry point ----------------------------------------------------------------------------


def test_an_entry_point_to_a_factory_registers_a_plugin_with_its_config() -> None:
    feeds = build_feeds(_sections(FEEDS_TOML), [_ep("alarm_column", f"{PLUGIN}:feed")])
    spec = feeds["alarm_column"]
    assert spec.origin == "plugin"
    assert "alarm_column" in spec.registered_by and PLUGIN in spec.registered_by
    assert spec.payload_model is AlarmColumnPayload
    assert spec.mapping["一键报警"] == TypeMapping("alarm", 4)
    assert spec.index is not None and spec.index.type_weights["alarm"] == 3.0
    assert payload_models(feeds)["alarm_column"] is AlarmColumnPayload


def test_an_entry_point_to_a_spec_object_works_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.plugins.alarm_column as plugin

    monkeypatch.setattr(plugin, "SPEC", plugin.feed(), raising=False)
    feeds = build_feeds({}, [_ep("alarm_column", f"{PLUGIN}:SPEC")])
    assert feeds["alarm_column"].origin == "plugin"


def test_a_dist_info_on_sys_path_is_found_like_an_installed_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dist_info(tmp_path / "site", {"alarm_column": f"{PLUGIN}:feed"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    feeds = load_feeds(_settings(tmp_path, FEEDS_TOML))
    assert feeds["alarm_column"].origin == "plugin"
    assert "pingan-feed-test 0.1.0" in feeds["alarm_column"].registered_by
    assert feeds["alarm_column"].index is not None


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.plugins.no_such_module:feed", "entry point 'alarm_column' (tests.plugins.no_such_module:feed)"),
        (f"{PLUGIN}:no_such_attribute", "failed to load"),
        (f"{PLUGIN}:SOURCE", "neither a FeedSpec nor a callable"),
        ("builtins:dict", "returned dict, not a FeedSpec"),
    ],
)
def test_a_broken_plugin_is_a_config_error_naming_its_entry_point(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match="entry point 'alarm_column'") as caught:
        build_feeds({}, [_ep("alarm_column", target)])
    assert message in str(caught.value)


def test_a_plugin_factory_that_raises_is_named() -> None:
    with pytest.raises(ConfigError, match=r"entry point 'boom'.*raised while building"):
        build_feeds({}, [_ep("boom", "builtins:iter")])  # iter() without arguments raises TypeError


def test_entry_point_and_feed_name_must_agree() -> None:
    with pytest.raises(ConfigError, match="defines feed 'alarm_column'"):
        build_feeds({}, [_ep("alarm", f"{PLUGIN}:feed")])


def test_a_plugin_cannot_replace_a_builtin() -> None:
    with pytest.raises(ConfigError, match="clashes with the built-in feed 'camera'"):
        build_feeds({}, [_ep("camera", f"{PLUGIN}:feed")])


def test_two_plugins_of_one_name_clash_but_one_found_twice_does_not() -> None:
    one = _ep("alarm_column", f"{PLUGIN}:feed")
    assert "alarm_column" in build_feeds({}, [one, _ep("alarm_column", f"{PLUGIN}:feed")])
    with pytest.raises(ConfigError, match="registered twice"):
        build_feeds({}, [one, _ep("alarm_column", "other.module:feed")])


def test_bad_plugin_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"\[a-z0-9_\]"):
        build_feeds({}, [_ep("Alarm-Column", f"{PLUGIN}:feed")])
    with pytest.raises(ConfigError, match=r"\[a-z0-9_\]"):
        FeedSpec("Alarm", AlarmColumnPayload)
    with pytest.raises(ConfigError, match="BaseModel"):
        FeedSpec("alarm", dict)  # type: ignore[arg-type]


# --- feeds defined or configured in the file ------------------------------------------------------------


def test_a_config_only_feed_names_its_payload_model_and_mapper() -> None:
    text = FEEDS_TOML.replace(
        "[feeds.alarm_column]\n",
        f'[feeds.alarm_column]\npayload_model = "{PLUGIN}:AlarmColumnPayload"\nmapper = "{PLUGIN}:map_record"\n',
    )
    spec = build_feeds(_sections(text), [])["alarm_column"]
    assert spec.origin == "config"
    assert spec.payload_model is AlarmColumnPayload
    from tests.plugins.alarm_column import map_record

    assert spec.resolve_mapper() is map_record


def test_config_layers_on_the_code_defaults() -> None:
    class Payload(BaseModel):
        x: int = 0

    base = FeedSpec(
        "demo", Payload, mapping={"a": TypeMapping("a", 1), "b": TypeMapping("b", 1)}, fields={"time": ("t",)}
    )
    sections = _sections(
        """
[feeds.demo]
topic = "{prefix}demo-raw"
timezone = "UTC"
personal_fields = ["owner"]
[feeds.demo.types]
B = { type = "bee", severity = 5 }
c = { type = "c", severity = 2 }
[feeds.demo.fields]
time = ["ts", "when"]
"""
    )
    from pingan.feeds import _apply_section

    spec = _apply_section("demo", sections["demo"], base, "test")
    assert dict(spec.mapping) == {"a": TypeMapping("a", 1), "b": TypeMapping("bee", 5), "c": TypeMapping("c", 2)}
    assert spec.fields["time"] == ("ts", "when")
    assert spec.topic_name(default_settings(topic_prefix="x.")) == "x.demo-raw"
    assert spec.personal_fields == ("owner",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[feeds.call110]\ncolour = 1\n", "unknown keys ['colour']"),
        ('[feeds.call110.types]\nx = { type = "criminal", severity = 6 }\n', "severity must be an integer"),
        ('[feeds.call110.types]\nx = { type = "Criminal", severity = 3 }\n', "type 'Criminal'"),
        ('[feeds.call110.types]\nx = "criminal"\n', "must be { type"),
        (
            '[feeds.call110.types]\nFIRE = { type = "fire", severity = 3 }\n'
            '"ｆｉｒｅ" = { type = "fire", severity = 3 }\n',
            "the same category once normalised",
        ),
        ("[feeds.drone]\n", "no built-in feed or installed plugin is called 'drone'"),
        ('[feeds.drone]\npayload_model = "nowhere:Model"\n', "cannot import 'nowhere'"),
        ('[feeds.call110]\npayload_model = "pingan.schemas.payloads:CameraPayload"\n', "belong to new feeds"),
        ('[feeds.call110]\ntimezone = "Mars/Olympus"\n', "unknown time zone"),
        ('[feeds.call110]\ntopic = "{tenant}.events"\n', "placeholder {prefix}"),
        ("[feeds.call110.index]\nbreakpoints = [[0.0, 0.0], [5.0, 0.0]]\n", "increase strictly"),
        ("[feeds.call110.index]\nbreakpoints = [[1.0, 0.0], [5.0, 10.0]]\n", "start at [0, 0]"),
        ("[feeds.call110.index]\ndefault_weight = 1.0\n", "needs breakpoints"),
        ("[feeds.call110.index]\nweight = 1.0\nbreakpoints = [[0, 0], [1, 1]]\n", "unknown keys ['weight']"),
        ("[feeds.Bad-Name]\n", "must be 1-64 characters"),
        ("[sources.call110]\n", "unknown top-level keys"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_feeds(_settings(tmp_path, text), entry_points=[])
    assert message in str(caught.value)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_feeds_config(tmp_path / "nope.toml")
    (tmp_path / "broken.toml").write_text("[feeds\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_feeds_config(tmp_path / "broken.toml")


# --- the risk index -------------------------------------------------------------------------------------


def _risk_doc() -> dict:
    return tomllib.loads(default_settings().risk_config_path.read_text())


def test_merge_adds_only_sections_risk_index_lacks_and_marks_the_version() -> None:
    risk = _risk_doc()
    sections = _sections(FEEDS_TOML + "\n[feeds.camera.index]\nbreakpoints = [[0.0, 0.0], [1.0, 500.0]]\n")
    feeds = build_feeds(sections, [_ep("alarm_column", f"{PLUGIN}:feed")])
    merged = merge_index_document(risk, feeds)
    assert merged["sources"]["camera"] == risk["sources"]["camera"]  # risk-index.toml wins
    assert merged["sources"]["alarm_column"] == {
        "default_weight": 0.0,
        "type_weights": {"alarm": 3.0, "tamper": 1.0, "fault": 0.0, "self_test": 0.0},
        "breakpoints": [[0.0, 0.0], [2.0, 50.0], [5.0, 100.0], [10.0, 150.0], [20.0, 200.0]],
    }
    assert merged["version"].startswith(f"{risk['version']}+alarm_column.")
    assert "alarm_column" not in risk["sources"]  # the input is not modified
    config = parse_config(merged)
    assert config.event_weight("alarm_column", "alarm", 4) == 3.0 * 1.5
    assert feeds_without_index(merged, feeds) == []


def test_merge_changes_nothing_without_feed_sections(settings) -> None:
    risk = _risk_doc()
    assert merge_index_document(risk, load_feeds(settings, entry_points=[])) == risk


def test_the_version_follows_the_feed_weights() -> None:
    risk = _risk_doc()
    feeds = build_feeds(_sections(FEEDS_TOML), [_ep("alarm_column", f"{PLUGIN}:feed")])
    heavier = _sections(FEEDS_TOML.replace("alarm = 3.0", "alarm = 4.0"))
    other = build_feeds(heavier, [_ep("alarm_column", f"{PLUGIN}:feed")])
    assert merge_index_document(risk, feeds)["version"] != merge_index_document(risk, other)["version"]


def test_a_feed_without_any_index_section_is_reported() -> None:
    feeds = build_feeds({}, [_ep("alarm_column", f"{PLUGIN}:feed")])
    assert feeds_without_index(merge_index_document(_risk_doc(), feeds), feeds) == ["alarm_column"]


def test_index_section_round_trips() -> None:
    section = SourceConfig(1.0, {"a": 2.0}, ((0.0, 0.0), (1.0, 50.0)))
    assert section.as_document() == {
        "default_weight": 1.0,
        "type_weights": {"a": 2.0},
        "breakpoints": [[0.0, 0.0], [1.0, 50.0]],
    }


def test_load_index_is_the_worker_s_index_with_the_feed_sections_and_the_spatial_term(settings) -> None:
    with_section = build_feeds(_sections(FEEDS_TOML), [_ep("alarm_column", f"{PLUGIN}:feed")])
    loaded = load_index(settings, with_section)
    assert loaded.config == parse_config(merge_index_document(_risk_doc(), with_section))
    assert loaded.config.event_weight("alarm_column", "alarm", 4) == 3.0 * 1.5
    assert loaded.config.version.startswith(f"{_risk_doc()['version']}+alarm_column.")
    assert loaded.spatial == parse_spatial(_risk_doc())
    assert loaded.unweighted_feeds == ()
    without = build_feeds({}, [_ep("alarm_column", f"{PLUGIN}:feed")])
    assert load_index(settings, without).unweighted_feeds == ("alarm_column",)


def test_load_index_reports_the_file_it_could_not_read(settings, tmp_path: Path) -> None:
    missing = settings.model_copy(update={"risk_config_path": tmp_path / "risk-index.toml"})
    with pytest.raises(ConfigError, match=r"risk index config .*risk-index\.toml does not exist"):
        load_index(missing, load_feeds(settings, entry_points=[]))
