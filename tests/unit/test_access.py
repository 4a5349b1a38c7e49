"""Roles from the keys file and the read permissions (pure)."""

from __future__ import annotations

import pytest

from pingan.api.access import DEAD_LETTER_READERS, READERS, Caller, check_open_read, identify, permit
from pingan.api.errors import ApiError
from pingan.api.ingest_auth import KeyRing, Producer, authorize, hash_key
from pingan.errors import ConfigError
from tests.support.defaults import default_settings


def _ring(**tables: list[dict]) -> KeyRing:
    return KeyRing.from_document(tables)


def test_clients_need_a_role_and_producers_default_to_ingest() -> None:
    ring = _ring(
        producer=[{"name": "cad", "sources": ["call110"], "key_sha256": [hash_key("k1")]}],
        client=[{"name": "screen", "role": "dashboard", "key_sha256": [hash_key("k2")]},
                {"name": "ops", "role": "admin", "sources": ["camera"], "key_sha256": [hash_key("k3")]}],
    )  # fmt: skip
    assert ring.identify("k1") == Producer("cad", frozenset({"call110"}), "ingest")
    assert ring.identify("k2") == Producer("screen", frozenset(), "dashboard")
    assert ring.identify("k3") == Producer("ops", frozenset({"camera"}), "admin")
    with pytest.raises(ConfigError, match="role must be one of"):
        _ring(client=[{"name": "x", "key_sha256": [hash_key("k")]}])
    with pytest.raises(ConfigError, match="role must be one of"):
        _ring(client=[{"name": "x", "role": "root", "key_sha256": [hash_key("k")]}])
    with pytest.raises(ConfigError, match="sources"):
        _ring(client=[{"name": "x", "role": "ingest", "key_sha256": [hash_key("k")]}])
    with pytest.raises(ConfigError, match="also listed"):
        _ring(producer=[{"name": "a", "sources": ["call110"], "key_sha256": [hash_key("k")]}],
              client=[{"name": "b", "role": "dashboard", "key_sha256": [hash_key("k")]}])  # fmt: skip


def test_only_ingest_and_admin_keys_send_events() -> None:
    ring = _ring(
        producer=[{"name": "cad", "sources": ["call110"], "key_sha256": [hash_key("k1")]}],
        client=[{"name": "screen", "role": "dashboard", "key_sha256": [hash_key("k2")]},
                {"name": "ops", "role": "admin", "sources": ["call110"], "key_sha256": [hash_key("k3")]}],
    )  # fmt: skip
    assert authorize(ring, "k1", "call110").name == "cad"
    assert authorize(ring, "k3", "call110").name == "ops"
    with pytest.raises(ApiError) as refused:
        authorize(ring, "k2", "call110")
    assert (refused.value.status, refused.value.code) == (403, "role_not_allowed")


def test_identify_and_permit_by_role() -> None:
    ring = _ring(client=[{"name": "screen", "role": "dashboard", "key_sha256": [hash_key("k")]}])
    assert identify(ring, None, open_read=False) is None
    assert identify(ring, None, open_read=True) == Caller("anonymous", "analyst")
    assert identify(ring, "k", open_read=True) == Caller("screen", "dashboard")
    with pytest.raises(ApiError) as unknown:
        identify(ring, "nope", open_read=True)  # a key that is sent is checked, open read or not
    assert (unknown.value.status, unknown.value.code) == (401, "invalid_api_key")
    dashboard = Caller("screen", "dashboard")
    assert permit(dashboard, READERS, "reading") is dashboard
    with pytest.raises(ApiError) as forbidden:
        permit(dashboard, DEAD_LETTER_READERS, "reading dead letters")
    assert (forbidden.value.status, forbidden.value.code) == (403, "role_not_allowed")
    with pytest.raises(ApiError) as missing:
        permit(None, READERS, "reading")
    assert (missing.value.status, missing.value.headers["WWW-Authenticate"][:6]) == (401, "Bearer")
    assert Caller("ops", "admin").sees_raw_personal_data and not Caller("a", "analyst").sees_raw_personal_data


def test_open_read_only_on_loopback() -> None:
    check_open_read(default_settings(api_host="127.0.0.1", api_open_read=True))
    check_open_read(default_settings(api_host="0.0.0.0"))  # default: off beyond loopback, nothing to refuse
    with pytest.raises(ConfigError):
        check_open_read(default_settings(api_host="0.0.0.0", api_open_read=True))
