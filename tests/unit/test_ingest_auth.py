"""Ingest API keys: hashing, the keys file, who may send what, and the 401/403 answers."""

from __future__ import annotations

import hashlib
import io
import tomllib
from pathlib import Path
from typing import Any

import pytest

import pingan.api.ingest_auth as ingest_auth
from pingan.api.errors import ApiError
from pingan.api.ingest_auth import KeyRing, Producer, authorize, hash_key, new_key_entry, presented_key
from pingan.errors import ConfigError

DEMO_KEY = "pingan-demo-ingest-key"  # documented in docs/ingest.md and deploy/config/ingest-keys.toml


def _ring(*producers: tuple[str, list[str], list[str]]) -> KeyRing:
    document = {
        "producer": [
            {"name": name, "sources": sources, "key_sha256": [hash_key(key) for key in keys]}
            for name, sources, keys in producers
        ]
    }
    return KeyRing.from_document(document)


def test_hash_key_is_hex_sha256_of_the_utf8_key() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_key("密钥") == hashlib.sha256("密钥".encode()).hexdigest()


def test_identify_finds_the_producer_of_any_of_its_keys_and_nothing_else() -> None:
    ring = _ring(("cad", ["call110"], ["k-old", "k-new"]), ("cams", ["camera", "checkpoint"], ["k-cam"]))
    assert ring.identify("k-old") == ring.identify("k-new") == Producer("cad", frozenset({"call110"}))
    assert ring.identify("k-cam") == Producer("cams", frozenset({"camera", "checkpoint"}))
    assert ring.identify("k-ol") is None
    assert ring.identify("") is None
    assert ring.identify(hash_key("k-old")) is None  # the stored hash is not a key
    assert len(ring) == 3


def test_identify_compares_every_entry_whatever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = _ring(("a", ["call110"], ["ka"]), ("b", ["call110"], ["kb"]), ("c", ["call110"], ["kc"]))
    calls: list[tuple[bytes, bytes]] = []
    real = ingest_auth.hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(ingest_auth.hmac, "compare_digest", counting)
    for key in ("ka", "kc", "nope"):
        calls.clear()
        ring.identify(key)
        assert len(calls) == 3, key  # no early exit: the time does not say which entry matched


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"producer": {"name": "x"}}, "array of tables"),
        ({"producer": [{"name": "", "sources": ["call110"], "key_sha256": "0" * 64}]}, "name must be"),
        ({"producer": [{"name": "x y", "sources": ["call110"], "key_sha256": "0" * 64}]}, "name must be"),
        ({"producer": [{"name": "x", "sources": [], "key_sha256": "0" * 64}]}, "sources"),
        ({"producer": [{"name": "x", "key_sha256": "0" * 64}]}, "sources"),
        ({"producer": [{"name": "x", "sources": ["call110"]}]}, "key_sha256"),
        ({"producer": [{"name": "x", "sources": ["call110"], "key_sha256": "abc"}]}, "64 hex digits"),
        ({"producer": [{"name": "x", "sources": ["call110"], "key": "plain", "key_sha256": "0" * 64}]}, "unknown"),
        (
            {"producer": [{"name": "x", "sources": ["call110"], "key_sha256": "0" * 64},
                          {"name": "y", "sources": ["camera"], "key_sha256": "0" * 64}]},
            "also listed for 'x'",
        ),
    ],
)  # fmt: skip
def test_bad_keys_documents_are_config_errors(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KeyRing.from_document(document)


def test_upper_case_hashes_and_a_single_string_are_accepted() -> None:
    ring = KeyRing.from_document(
        {"producer": [{"name": "x", "sources": "call110", "key_sha256": hash_key("k").upper()}]}
    )
    assert ring.identify("k") == Producer("x", frozenset({"call110"}))


def test_load_reads_toml_and_refuses_a_missing_or_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(f'[[producer]]\nname = "cad"\nsources = ["call110"]\nkey_sha256 = ["{hash_key("k1")}"]\n')
    assert KeyRing.load(path).identify("k1") == Producer("cad", frozenset({"call110"}))
    with pytest.raises(ConfigError, match="does not exist"):
        KeyRing.load(tmp_path / "missing.toml")
    path.write_text("[[producer]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        KeyRing.load(path)


def test_the_shipped_file_holds_the_documented_demo_key_for_the_four_feeds(settings) -> None:
    ring = KeyRing.load(settings.ingest_keys_path)
    producer = ring.identify(DEMO_KEY)
    assert producer is not None
    assert producer.sources == {"call110", "camera", "checkpoint", "app_report"}


def test_presented_key_prefers_bearer_and_ignores_blank_values() -> None:
    assert presented_key("b-key", "x-key") == "b-key"
    assert presented_key(None, " x-key ") == "x-key"
    assert presented_key("  ", "x-key") == "x-key"
    assert presented_key(None, None) is None
    assert presented_key("", "   ") is None


def _refusal(ring: KeyRing, key: str | None, source: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        authorize(ring, key, source)
    return caught.value


def test_authorize_answers_401_without_or_with_an_unknown_key_and_403_outside_the_scope() -> None:
    ring = _ring(("cams", ["camera"], ["k-cam"]))
    assert authorize(ring, "k-cam", "camera").name == "cams"

    missing = _refusal(ring, None, "camera")
    assert (missing.status, missing.code) == (401, "missing_api_key")
    assert missing.headers == {"WWW-Authenticate": 'Bearer realm="pingan-ingest"'}

    wrong = _refusal(ring, "k-cam2", "camera")
    assert (wrong.status, wrong.code) == (401, "invalid_api_key")
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="pingan-ingest", error="invalid_token"'

    scoped = _refusal(ring, "k-cam", "call110")
    assert (scoped.status, scoped.code, scoped.field) == (403, "source_not_allowed", "source")
    assert "camera" in scoped.message and "call110" in scoped.message


def test_new_key_entry_is_a_valid_entry_for_a_fresh_random_key() -> None:
    key, entry = new_key_entry("alarm-columns", ["alarm_column"])
    other, _ = new_key_entry("alarm-columns", ["alarm_column"])
    assert key != other and len(key) > 40 and key not in entry
    ring = KeyRing.from_document(tomllib.loads(entry))
    assert ring.identify(key) == Producer("alarm-columns", frozenset({"alarm_column"}))
    with pytest.raises(ConfigError):
        new_key_entry("no spaces", ["camera"])


def test_cli_prints_an_entry_and_hashes_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ingest_auth.main(["new-key", "cad", "call110"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("[[producer]]") and 'sources = ["call110"]' in out
    assert "key (give it to the producer" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("abc\n"))
    assert ingest_auth.main(["hash"]) == 0
    assert capsys.readouterr().out.strip() == hash_key("abc")
