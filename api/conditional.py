"""Conditional and compressed responses for bodies rendered once per snapshot (pure, unit-tested).

A poll that repeats the ETag it was given gets ``304 Not Modified`` with no body; a changed snapshot gets
the new body, gzip-compressed once per snapshot (not once per poll) for clients that accept gzip. The
compressed and identity bodies are different representations, so their strong ETags differ too
(RFC 9110 8.8.3); ``If-None-Match`` matches either, as both name the same snapshot version.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

# Every client must revalidate (browsers may keep the body, but ask with If-None-Match each time).
CACHE_CONTROL = "no-cache"
GZIP_LEVEL = 5  # cheap: about as small as 9 for JSON at a fraction of the CPU
GZIP_SUFFIX = "+gzip"


def entity_tag(version: int, variant: object) -> str:
    """The strong ETag of one rendering (format and filters in ``variant``) of one snapshot version."""
    digest = hashlib.blake2b(repr(variant).encode(), digest_size=4).hexdigest()
    return f'"{version}-{digest}"'


def gzipped_tag(tag: str) -> str:
    return f'{tag[:-1]}{GZIP_SUFFIX}"'


def _opaque(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]  # If-None-Match uses the weak comparison (RFC 9110 13.1.2)
    return tag.replace(GZIP_SUFFIX + '"', '"')


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """Whether ``If-None-Match`` names this representation (or ``*``)."""
    if not if_none_match:
        return False
    wanted = _opaque(tag)
    return any(part.strip() == "*" or _opaque(part) == wanted for part in if_none_match.split(","))


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when ``Accept-Encoding`` lists gzip (or ``*``) without ``q=0``."""
    for part in (accept_encoding or "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "*"):
            continue
        q = params.replace(" ", "").lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


@dataclass(frozen=True)
class Rendered:
    """One body of a snapshot in both codings, compressed when first asked for."""

    identity: bytes
    tag: str

    def gzip(self) -> bytes:
        return gzip.compress(self.identity, compresslevel=GZIP_LEVEL, mtime=0)


def response_headers(tag: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"ETag": tag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding", **(extra or {})}
