"""Key scopes (api/scopes.py, api/ingest_auth.py): parsed from the keys file, resolved to the registry's grids."""

from __future__ import annotations

import pytest

from pingan.api.access import Caller
from pingan.api.ingest_auth import KeyRing, hash_key
from pingan.api.scopes import ScopeIndex, visible
from pingan.errors import ConfigError
from pingan.grids import GridRegistry
from pingan.settings import Settings

REGISTRY = GridRegistry.load(Settings().grid_registry_path)


def _ring(**client: object) -> KeyRing:
    table = {"name": "centre", "role": "operator", "key_sha256": [hash_key("k")], **client}
    return KeyRing.from_document({"client": [table]})


def test_a_client_key_carries_its_scope() -> None:
    found = _ring(scope="PA01-C01").identify("k")
    assert found is not None and (found.name, found.role, found.scope) == ("centre", "operator", "PA01-C01")
    assert _ring().identify("k").scope == ""  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("client", "message"),
    [({"scope": "no spaces allowed"}, "scope must be a unit id"), ({"scope": 7}, "scope must be a unit id")],
)
def test_bad_scopes_are_config_errors(client: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _ring(**client)


def test_an_ingest_key_cannot_carry_a_scope() -> None:
    with pytest.raises(ConfigError, match="only reading roles carry a scope"):
        KeyRing.from_document({"producer": [{"name": "cad", "sources": ["call110"], "scope": "PA",
                                             "key_sha256": [hash_key("p")]}]})  # fmt: skip


def test_scopes_resolve_to_the_units_grids_and_an_unknown_unit_sees_nothing() -> None:
    index = ScopeIndex(REGISTRY)
    community = index.of(Caller("c", "operator", "PA01-C01"))
    district = index.of(Caller("d", "operator", "PA"))
    assert community is not None and district is not None
    assert community.grid_ids == {g.grid_id for g in REGISTRY.grids if g.community_id == "PA01-C01"}
    assert len(community.grid_ids) == 37 and community.level == "community"
    assert district.grid_ids == {g.grid_id for g in REGISTRY.grids}
    assert index.of(Caller("x", "dashboard")) is None
    assert visible(None, "anything") and not visible(community, "PA01-C02-G01")
    assert index.check(_ring(scope="NOPE")) == ["centre"]
    assert index.get("NOPE").grid_ids == frozenset()
    assert index.check(_ring(scope="PA01")) == []
