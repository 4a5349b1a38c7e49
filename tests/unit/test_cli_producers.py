"""`pingan producers list` and `pingan producers new`: what ops see, and a scaffold whose test passes."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from pingan.cli import main
from pingan.errors import ConfigError
from pingan.feeds import build_feeds
from pingan.producers.adapters.scaffold import scaffold
from tests.plugins.alarm_column import FEEDS_TOML
from tests.support.plugins import write_dist_info


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "feeds.toml"
    path.write_text(Path("deploy/config/feeds.toml").read_text(encoding="utf-8") + extra, encoding="utf-8")
    return path


def test_list_shows_builtins_and_a_plugin_with_its_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_dist_info(tmp_path / "site", {"alarm_column": "tests.plugins.alarm_column:feed"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PINGAN_FEEDS_CONFIG_PATH", str(_config(tmp_path, FEEDS_TOML)))
    monkeypatch.setenv("PINGAN_TOPIC_PREFIX", "city.")
    assert main(["producers", "list", "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:6]}
    assert rows["alarm_column"][:6] == [
        "alarm_column", "plugin", "tests.plugins.alarm_column.AlarmColumnPayload", "8", "city.events", "feeds",
    ]  # fmt: skip
    assert rows["call110"][:6] == [
        "call110", "builtin", "pingan.schemas.payloads.Call110Payload", "24", "city.events", "risk-index.toml",
    ]  # fmt: skip
    assert any("registered by entry point 'alarm_column'" in line for line in lines)


def test_list_reports_a_broken_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_dist_info(tmp_path / "site", {"alarm_column": "tests.plugins.missing:feed"})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert main(["producers", "list"]) == 2
    assert "entry point 'alarm_column' (tests.plugins.missing:feed)" in capsys.readouterr().err


def _load(name: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def _run_tests(module: ModuleType) -> int:
    tests = [getattr(module, name) for name in dir(module) if name.startswith("test_")]
    for test in tests:
        test()
    return len(tests)


def test_new_in_the_repository_writes_a_module_and_a_passing_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["producers", "new", "alarm_column", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    module_path = tmp_path / "producers" / "adapters" / "alarm_column.py"
    test_path = tmp_path / "tests" / "unit" / "test_adapter_alarm_column.py"
    assert f"wrote {module_path}" in out and f"wrote {test_path}" in out
    # The generated test runs against the generated module, as it will once the files are in the repository.
    _load("pingan.producers.adapters.alarm_column", module_path, monkeypatch)
    assert _run_tests(_load("generated_test_alarm_column", test_path, monkeypatch)) == 3
    # The printed section is valid feeds config and registers the feed by its import paths.
    snippet = out[out.index("[feeds.alarm_column]") : out.index("add the section")]
    feeds = build_feeds(tomllib.loads(snippet)["feeds"], [])
    assert feeds["alarm_column"].origin == "config" and feeds["alarm_column"].index is not None

    assert main(["producers", "new", "alarm_column", "--root", str(tmp_path)]) == 2  # no silent overwrite
    assert "not overwriting" in capsys.readouterr().err


def test_new_plugin_package_registers_by_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["producers", "new", "gas_sensor", "--plugin", str(tmp_path)]) == 0
    root = tmp_path / "pingan-feed-gas-sensor"
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    entry_points = pyproject["project"]["entry-points"]["pingan.feeds"]
    assert entry_points == {"gas_sensor": "pingan_feed_gas_sensor:feed"}
    monkeypatch.syspath_prepend(str(root / "src"))
    assert _run_tests(_load("generated_test_gas_sensor", root / "tests" / "test_gas_sensor.py", monkeypatch)) == 3
    # Installed (a dist-info standing in for pip), it is a plugin feed.
    write_dist_info(tmp_path / "site", entry_points, name="pingan-feed-gas-sensor")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    snippet = scaffold("gas_sensor", plugin=True).feeds_toml
    from pingan.feeds import _entry_points

    feeds = build_feeds(tomllib.loads(snippet)["feeds"], _entry_points())
    assert feeds["gas_sensor"].origin == "plugin" and len(feeds["gas_sensor"].mapping) == 1


def test_new_refuses_builtin_and_bad_names() -> None:
    with pytest.raises(ConfigError, match="built-in"):
        scaffold("camera", plugin=False)
    with pytest.raises(ConfigError, match=r"\[a-z0-9_\]"):
        scaffold("Gas-Sensor", plugin=True)
