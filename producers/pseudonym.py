"""Keyed pseudonyms for plates, phone numbers and person ids, computed at the producer (the edge).

``pseudonymise(value, key)`` = ``"p1:" + blake2b(normalise(value), key=key, digest_size=16).hexdigest()``,
which is what ``pingan.schemas.payloads.PSEUDONYM_PATTERN`` accepts. The same identifier always gives the same
pseudonym under one key, so analysts can count repeat hits at a checkpoint without ever seeing a plate; a
different key (another deployment, a rotated key) gives unrelated pseudonyms. Without the key the hash
cannot be reversed by enumerating plates or phone numbers, which an unkeyed hash of such a small space
would allow; hence an empty key is refused.

Normalisation makes the spellings a clerk or a camera produce for one identifier hash alike:
NFKC (full-width "ＡＢ１" -> "AB1"), upper case (plates and ID-card check letters are case-blind), and no
whitespace or the separators people put in plates and phone numbers ("川A·12345", "川a 12345" and
"川A-12345" are one plate; "138-0000-0000" and "138 0000 0000" one phone number). Separators are dropped
anywhere, so this is for identifiers, not free text. The ``p1:`` prefix names this scheme: a future
change of normalisation or hash gets ``p2:`` rather than silently splitting one person into two.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["PREFIX", "normalise", "pseudonymise"]

PREFIX = "p1:"
_DIGEST_BYTES = 16
_DROP = re.compile(r"[\s·•・.\-_/]+")


def normalise(value: str) -> str:
    """The canonical spelling of an identifier before hashing (see the module docstring)."""
    return _DROP.sub("", unicodedata.normalize("NFKC", value)).upper()


def pseudonymise(value: str, key: bytes) -> str:
    """``p1:`` + 32 hex digits: a keyed BLAKE2b of the normalised identifier."""
    if not key:
        raise ValueError("a pseudonym key is required: an unkeyed hash of a plate can be reversed")
    if len(key) > hashlib.blake2b.MAX_KEY_SIZE:
        raise ValueError(f"the pseudonym key must be at most {hashlib.blake2b.MAX_KEY_SIZE} bytes")
    canonical = normalise(value)
    if not canonical:
        raise ValueError("cannot pseudonymise an empty identifier")
    digest = hashlib.blake2b(canonical.encode("utf-8"), key=key, digest_size=_DIGEST_BYTES)
    return PREFIX + digest.hexdigest()
