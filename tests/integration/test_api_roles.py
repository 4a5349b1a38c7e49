"""Who may read what, on the real ClickHouse: keys with roles from the keys file, 401/403 per role,
dead-letter redaction, readiness details, and open read refused beyond loopback."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from pingan.api.access import check_open_read
from pingan.api.ingest_auth import hash_key
from pingan.api.models import DeadLettersResponse, ErrorBody
from pingan.errors import ConfigError
from pingan.settings import Settings
from pingan.store import dead_letters
from tests.integration.test_api import NOW, running_api
from tests.support.defaults import default_settings

pytestmark = pytest.mark.integration

KEYS = {"dashboard": "k-dash", "analyst": "k-analyst", "ingest": "k-ingest", "admin": "k-admin"}
PLATE, PHONE = "川A12345", "13912345678"


def _keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(
        f"""
[[producer]]
name = "cad"
sources = ["call110"]
key_sha256 = ["{hash_key(KEYS["ingest"])}"]

[[client]]
name = "screen"
role = "dashboard"
key_sha256 = ["{hash_key(KEYS["dashboard"])}"]

[[client]]
name = "analysts"
role = "analyst"
key_sha256 = ["{hash_key(KEYS["analyst"])}"]

[[client]]
name = "ops"
role = "admin"
sources = ["call110"]
key_sha256 = ["{hash_key(KEYS["admin"])}"]
""",
        encoding="utf-8",
    )
    return path


def _as(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


def _problem(response: httpx.Response, status: int, code: str) -> ErrorBody:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = ErrorBody.model_validate(response.json())
    assert problem.code == code
    return problem


READS = ["/v1/grids/risk", "/v1/grids/shapes", "/v1/hotspots", "/v1/grids", "/v1/units/community/risk",
         "/v1/alerts", "/v1/grids/PA01-C01-G01/history"]  # fmt: skip


async def test_roles_decide_reads_and_dead_letters_are_redacted_but_for_admin(
    settings: Settings, tmp_path: Path
) -> None:
    keys = _keys_file(tmp_path)
    async with running_api(settings, api_cache_seconds=0, api_open_read=False, ingest_keys_path=keys) as api:
        client = api.client
        raw = orjson.dumps({"source": "checkpoint", "payload": {"plate": PLATE, "phone": PHONE},
                            "note": f"call {PHONE}"})  # fmt: skip
        letter = dead_letters.DeadLetter("t.events", 0, 7, NOW - timedelta(minutes=1), "invalid_field",
                                         "payload.plate", f"plate {PLATE} is not a pseudonym", raw)  # fmt: skip
        dead_letters.insert(api.writer, [dead_letters.row(letter, ingested_at=NOW)])

        missing = _problem(await client.get("/v1/grids/risk"), 401, "missing_api_key")
        assert missing.status == 401
        assert (await client.get("/v1/grids/risk")).headers["www-authenticate"].startswith("Bearer")
        _problem(await client.get("/v1/grids/risk", headers={"X-API-Key": "nope"}), 401, "invalid_api_key")
        for path in READS:
            _problem(await client.get(path, headers=_as("ingest")), 403, "role_not_allowed")
            for role in ("dashboard", "analyst", "admin"):
                assert (await client.get(path, headers=_as(role))).status_code == 200, (path, role)
        assert (await client.get("/v1/grids/risk", headers={"X-API-Key": KEYS["dashboard"]})).status_code == 200
        # the index answers 404 (nothing published) to a reader, not 401/403
        assert (await client.get("/v1/index/day", headers=_as("dashboard"))).status_code == 404

        _problem(await client.get("/v1/dead-letters", headers=_as("dashboard")), 403, "role_not_allowed")
        _problem(await client.get("/v1/dead-letters"), 401, "missing_api_key")
        seen = DeadLettersResponse.model_validate((await client.get("/v1/dead-letters", headers=_as("analyst"))).json())
        (shown,) = seen.dead_letters
        assert shown.redacted is True
        for secret in (PLATE, PHONE):
            assert secret not in shown.raw and secret not in shown.reason
        assert orjson.loads(shown.raw)["payload"]["plate"].startswith("p1:")  # pseudonymised, still countable
        admin = DeadLettersResponse.model_validate((await client.get("/v1/dead-letters", headers=_as("admin"))).json())
        assert admin.dead_letters[0].redacted is False
        assert PLATE in admin.dead_letters[0].raw and PHONE in admin.dead_letters[0].reason + admin.dead_letters[0].raw

        # liveness is open; readiness tells its status to anyone and its details to a key
        assert (await client.get("/healthz")).status_code == 200
        anonymous = await client.get("/readyz")
        assert "checks" not in anonymous.json()
        detailed = await client.get("/readyz", headers=_as("ingest"))
        assert set(detailed.json()["checks"]) == {"broker", "clickhouse", "worker"}

        # a reading key cannot send events; the producer's key still can be checked by the gateway
        refused = await client.post("/v1/ingest/call110", headers=_as("dashboard"), json={"events": []})
        _problem(refused, 403, "role_not_allowed")


async def test_open_read_is_the_loopback_default_and_refused_beyond_it(settings: Settings, tmp_path: Path) -> None:
    assert default_settings(api_host="127.0.0.1").open_read is True
    assert default_settings(api_host="0.0.0.0").open_read is False
    assert default_settings(api_host="127.0.0.1", api_open_read=False).open_read is False
    with pytest.raises(ConfigError, match="loopback only"):
        check_open_read(default_settings(api_host="10.1.2.3", api_open_read=True))
    with pytest.raises(ConfigError, match="loopback only"):
        async with running_api(settings, api_host="0.0.0.0", api_open_read=True):
            pass
    # open read: no key reads as an analyst (dead letters redacted); a wrong key is still refused
    keys = _keys_file(tmp_path)
    async with running_api(settings, api_cache_seconds=0, api_open_read=True, ingest_keys_path=keys) as api:
        assert (await api.client.get("/v1/grids/risk")).status_code == 200
        letters = (await api.client.get("/v1/dead-letters")).json()
        assert letters["dead_letters"] == [] or all(d["redacted"] for d in letters["dead_letters"])
        _problem(await api.client.get("/v1/grids/risk", headers={"X-API-Key": "nope"}), 401, "invalid_api_key")
        _problem(await api.client.get("/v1/grids/risk", headers=_as("ingest")), 403, "role_not_allowed")
