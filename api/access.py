"""Who may read what: API keys with roles from the keys file (api/ingest_auth.py).

| role      | reads                                                  | alert actions | POST /v1/ingest, webhooks |
|-----------|--------------------------------------------------------|---------------|---------------------------|
| dashboard | map, shapes, grids, history, hot spots, units, index, alerts | no      | no                        |
| operator  | the same as dashboard                                  | yes           | no                        |
| analyst   | the same, plus dead letters (personal fields pseudonymised)  | no      | no                        |
| ingest    | nothing                                                | no            | its sources               |
| admin     | everything, dead letters unredacted                    | yes           | its sources               |

A reading key may carry a scope (a unit of the grid registry, api/scopes.py): its reads and actions answer
for that unit's grids only.

``/healthz``, ``/metrics``, the map page and its static files need no key; ``/readyz`` answers its status
to anyone and its details to a key of any role. In open-read mode (``settings.open_read``, the local demo
only: the API refuses it on a non-loopback address) a request without a key reads as an analyst; a key
that is sent is still checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from pingan.api.errors import ApiError
from pingan.api.ingest import API_KEY_SCHEME, BEARER_SCHEME
from pingan.api.ingest_auth import REALM, KeyRing, presented_key
from pingan.errors import ConfigError
from pingan.settings import Settings

# The same two ways to send a key as the ingest gateway's (one keys file, one OpenAPI security scheme each).
READ_BEARER = BEARER_SCHEME
READ_API_KEY = API_KEY_SCHEME

READERS = frozenset({"dashboard", "operator", "analyst", "admin"})
ACTORS = frozenset({"operator", "admin"})  # may act on alerts (POST /v1/alerts/{alert_id}/actions)
DEAD_LETTER_READERS = frozenset({"analyst", "admin"})
ANONYMOUS_ROLE = "analyst"  # what a keyless request reads as in open-read mode


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    scope: str = ""  # a unit id: reads answer for its grids only ("" = every grid)

    @property
    def sees_raw_personal_data(self) -> bool:
        return self.role == "admin"


def check_open_read(settings: Settings) -> None:
    """Open read is for the local demo: refuse it when the API listens beyond loopback."""
    if settings.open_read and not settings.api_on_loopback:
        raise ConfigError(
            f"PINGAN_API_OPEN_READ is on but the API listens on {settings.api_host}: open read (no API key) is "
            "for the local demo on loopback only; give dashboards keys (docs/api.md)"
        )


def identify(ring: KeyRing, key: str | None, *, open_read: bool) -> Caller | None:
    """The caller of a request: None without a key (outside open read); 401 for an unknown key."""
    if key is None:
        return Caller("anonymous", ANONYMOUS_ROLE) if open_read else None
    found = ring.identify(key)
    if found is None:
        raise ApiError(401, "invalid_api_key", "the API key is not valid",
                       headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})  # fmt: skip
    return Caller(found.name, found.role, found.scope)


def permit(caller: Caller | None, roles: frozenset[str], what: str) -> Caller:
    """``caller`` if its role is one of ``roles``; 401 without a caller, 403 for another role."""
    if caller is None:
        raise ApiError(401, "missing_api_key",
                       "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                       headers={"WWW-Authenticate": REALM})  # fmt: skip
    if caller.role not in roles:
        allowed = ", ".join(sorted(roles))
        raise ApiError(403, "role_not_allowed", f"{what} needs a key with role {allowed}; {caller.name!r} is "
                       f"{caller.role}")  # fmt: skip
    return caller


async def optional_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(READ_BEARER)],
    api_key: Annotated[str | None, Depends(READ_API_KEY)],
) -> Caller | None:
    resources = getattr(request.app.state, "resources", None)
    if resources is None:
        raise RuntimeError("the API's lifespan has not run (serve it, or enter app.router.lifespan_context)")
    key = presented_key(bearer.credentials if bearer else None, api_key)
    return identify(resources.keys, key, open_read=resources.settings.open_read)


CallerDep = Annotated[Caller | None, Depends(optional_caller)]


async def reader(caller: CallerDep) -> Caller:
    return permit(caller, READERS, "reading")


async def actor(caller: CallerDep) -> Caller:
    return permit(caller, ACTORS, "acting on alerts")


async def dead_letter_reader(caller: CallerDep) -> Caller:
    return permit(caller, DEAD_LETTER_READERS, "reading dead letters")


ReaderDep = Annotated[Caller, Depends(reader)]
ActorDep = Annotated[Caller, Depends(actor)]
DeadLetterReaderDep = Annotated[Caller, Depends(dead_letter_reader)]
