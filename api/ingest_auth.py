"""API keys: who is calling, with which role, and whether they may send this source.

Keys are configured in a TOML file (``settings.ingest_keys_path``, e.g. ``deploy/config/ingest-keys.toml``)
as SHA-256 hashes, so the file can be read by ops tooling and kept in a repository without handing out keys.
A key is a long random string (``python -m pingan.api.ingest_auth new-key NAME SOURCE...`` makes one), so a plain
hash is enough: there is no low-entropy password to protect with a slow hash.

    [[producer]]            # role "ingest": POST events of these sources, nothing else
    name = "cad-bridge"
    sources = ["call110"]
    key_sha256 = ["<64 hex digits>", "<another, while rotating>"]

    [[client]]              # readers: role "dashboard", "operator", "analyst" or "admin" (api/access.py)
    name = "district-screen"
    role = "dashboard"
    scope = "PA01"          # optional: a unit id of the grid registry; reads answer for its grids only
    key_sha256 = ["<64 hex digits>"]

Everything here is pure except :meth:`KeyRing.load`, which reads the file once at start-up.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pingan.api.errors import ApiError
from pingan.config_files import read_toml
from pingan.errors import ConfigError

__all__ = ["ROLES", "KeyRing", "Producer", "authorize", "hash_key", "presented_key"]

REALM = 'Bearer realm="pingan-ingest"'
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
# What each role may do is decided in api/access.py (reads) and by ``may_send`` (ingest).
ROLES = ("dashboard", "operator", "analyst", "ingest", "admin")
READ_ROLES = ("dashboard", "operator", "analyst", "admin")


def hash_key(key: str) -> str:
    """The stored form of a key: SHA-256 of its UTF-8 bytes, lower-case hex."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Producer:
    """An authenticated caller: its name (the dead letters' origin), the sources it may send, its role, and
    the unit its reads are limited to ("" for none; checked against the grid registry by the API)."""

    name: str
    sources: frozenset[str]
    role: str = "ingest"
    scope: str = ""

    def may_send(self, source: str) -> bool:
        return self.role in ("ingest", "admin") and source in self.sources


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{where}: expected a non-empty list of strings")
    return value


@dataclass(frozen=True)
class KeyRing:
    """Hashed keys and the producer each belongs to."""

    entries: tuple[tuple[bytes, Producer], ...]

    @classmethod
    def from_document(cls, document: Mapping[str, Any], origin: str = "ingest keys") -> KeyRing:
        entries: list[tuple[bytes, Producer]] = []
        seen: dict[str, str] = {}
        for table_name, default_role in (("producer", "ingest"), ("client", None)):
            tables = document.get(table_name, [])
            if not isinstance(tables, list):
                raise ConfigError(f"{origin}: [[{table_name}]] must be an array of tables")
            for index, table in enumerate(tables):
                where = f"{origin}: {table_name} #{index + 1}"
                producer, digests = _entry(table, where, default_role)
                for digest in digests:
                    if digest in seen:
                        # One key must identify one caller, or its scope would depend on file order.
                        raise ConfigError(
                            f"{where} ({producer.name}): the same key hash is also listed for {seen[digest]!r}"
                        )
                    seen[digest] = producer.name
                    entries.append((bytes.fromhex(digest), producer))
        return cls(tuple(entries))

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        return cls.from_document(read_toml(path, "ingest keys file", hint="setting ingest_keys_path"), str(path))

    def identify(self, key: str) -> Producer | None:
        """The producer owning ``key``, or None.

        Every stored hash is compared, with a constant-time comparison, whatever matched: the time taken
        says nothing about which entry (or how much of one) the presented key came close to.
        """
        digest = hashlib.sha256(key.encode()).digest()
        found: Producer | None = None
        for stored, producer in self.entries:
            if hmac.compare_digest(stored, digest) and found is None:
                found = producer
        return found

    def __len__(self) -> int:
        return len(self.entries)


def _entry(table: Any, where: str, default_role: str | None) -> tuple[Producer, list[str]]:
    """One [[producer]] (role ingest unless said) or [[client]] (role required) table, and its key hashes."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(table) - {"name", "sources", "key_sha256", "role", "scope"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: name must be 1-64 letters, digits, '.', '_' or '-'")
    role = table.get("role", default_role)
    if role not in ROLES:
        raise ConfigError(f"{where} ({name}): role must be one of {', '.join(ROLES)}")
    scope = table.get("scope", "")
    if not isinstance(scope, str) or (scope and not _NAME.match(scope)):
        raise ConfigError(f"{where} ({name}): scope must be a unit id of the grid registry")
    if scope and role not in READ_ROLES:
        raise ConfigError(f"{where} ({name}): only reading roles carry a scope, not {role}")
    needs_sources = role == "ingest" or "sources" in table
    sources = frozenset(_strings(table.get("sources"), f"{where} ({name}) sources")) if needs_sources else frozenset()
    digests = []
    for digest in _strings(table.get("key_sha256"), f"{where} ({name}) key_sha256"):
        digest = digest.lower()
        if not _HEX64.match(digest):
            raise ConfigError(f"{where} ({name}): key_sha256 entries are 64 hex digits (SHA-256)")
        digests.append(digest)
    return Producer(name, sources, role, scope), digests


def presented_key(bearer: str | None, api_key: str | None) -> str | None:
    """The key sent as ``Authorization: Bearer <key>`` (preferred) or ``X-API-Key: <key>``; None if neither.

    ``bearer`` is the credentials part of a Bearer Authorization header (another scheme gives None).
    """
    for candidate in (bearer, api_key):
        if candidate and candidate.strip():
            return candidate.strip()
    return None


def authorize(ring: KeyRing, key: str | None, source: str) -> Producer:
    """The caller, if ``key`` is known and may send ``source``. Raises ApiError 401 or 403."""
    if key is None:
        raise ApiError(
            401,
            "missing_api_key",
            "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            headers={"WWW-Authenticate": REALM},
        )
    producer = ring.identify(key)
    if producer is None:
        raise ApiError(
            401,
            "invalid_api_key",
            "the API key is not valid",
            headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'},
        )
    if producer.role not in ("ingest", "admin"):
        message = f"key {producer.name!r} has role {producer.role!r}: it may not send events"
        raise ApiError(403, "role_not_allowed", message)
    if not producer.may_send(source):
        allowed = ", ".join(sorted(producer.sources))
        raise ApiError(
            403, "source_not_allowed", f"producer {producer.name!r} may send {allowed}, not {source!r}", "source"
        )
    return producer


def new_key_entry(name: str, sources: Sequence[str]) -> tuple[str, str]:
    """(a new random key, the TOML entry to add to the keys file). The key is shown once, never stored."""
    if not _NAME.match(name):
        raise ConfigError("name must be 1-64 letters, digits, '.', '_' or '-'")
    key = "pgn_" + secrets.token_urlsafe(32)
    listed = ", ".join(f'"{source}"' for source in sources)
    entry = f'[[producer]]\nname = "{name}"\nsources = [{listed}]\nkey_sha256 = ["{hash_key(key)}"]\n'
    return key, entry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pingan.api.ingest_auth", description="ingest gateway API keys")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new-key", help="make a key and print the entry for the keys file")
    new.add_argument("name")
    new.add_argument("sources", nargs="+")
    digest = commands.add_parser("hash", help="print the SHA-256 of a key read from standard input")
    digest.set_defaults(command="hash")
    args = parser.parse_args(argv)
    if args.command == "new-key":
        key, entry = new_key_entry(args.name, args.sources)
        print(f"key (give it to the producer; it is not stored anywhere): {key}\n", file=sys.stderr)
        print(entry)
    else:
        print(hash_key(sys.stdin.readline().strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
