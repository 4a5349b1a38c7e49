"""Keyed pseudonyms: the format the payload schema demands, stable, keyed, normalised."""

from __future__ import annotations

import hashlib
import re

import pytest
from pydantic import ValidationError

from pingan.producers.pseudonym import normalise, pseudonymise
from pingan.schemas.payloads import PSEUDONYM_PATTERN, AppReportPayload, CheckpointPayload

KEY = b"test-key"


def test_format_matches_the_payload_schema() -> None:
    value = pseudonymise("川A·12345", KEY)
    assert re.fullmatch(PSEUDONYM_PATTERN, value)
    assert CheckpointPayload(checkpoint_id="KK-01", direction="in", plate_hash=value).plate_hash == value
    assert AppReportPayload(report_id="r", reporter_role="citizen", reporter_id=value, category="hazard")


def test_raw_identifiers_are_rejected_by_the_schema() -> None:
    with pytest.raises(ValidationError):
        CheckpointPayload(checkpoint_id="KK-01", direction="in", plate_hash="川A·12345")


def test_definition_is_keyed_blake2b_of_the_normalised_value() -> None:
    expected = hashlib.blake2b("川A12345".encode(), key=KEY, digest_size=16).hexdigest()
    assert pseudonymise("川a·12345", KEY) == "p1:" + expected
    # Pinned so that a change of the scheme is a deliberate `p2:`, never an accident.
    assert pseudonymise("138 0000 0000", b"pingan-local-demo-key-change-me") == "p1:4a41ff7f5120ffa555cb7d9607d5ae22"


def test_stable_and_key_dependent() -> None:
    assert pseudonymise("川A12345", KEY) == pseudonymise("川A12345", KEY)
    assert pseudonymise("川A12345", KEY) != pseudonymise("川A12345", b"other-key")
    assert pseudonymise("川A12345", KEY) != pseudonymise("川A12346", KEY)


@pytest.mark.parametrize(
    ("spellings", "canonical"),
    [
        (["川A·12345", "川a12345", " 川A 12345 ", "川A-12345", "川Ａ１２３４５", "川A・12345"], "川A12345"),
        (["138-0000-0000", "138 0000 0000", "13800000000", "１３８００００００００"], "13800000000"),
        (["51010119900101123x", "51010119900101123X"], "51010119900101123X"),
    ],
)
def test_spellings_of_one_identifier_agree(spellings: list[str], canonical: str) -> None:
    assert {normalise(s) for s in spellings} == {canonical}
    assert len({pseudonymise(s, KEY) for s in spellings}) == 1


def test_refuses_missing_or_oversized_keys_and_empty_values() -> None:
    with pytest.raises(ValueError, match="key is required"):
        pseudonymise("川A12345", b"")
    with pytest.raises(ValueError, match="at most 64 bytes"):
        pseudonymise("川A12345", b"k" * 65)
    with pytest.raises(ValueError, match="empty"):
        pseudonymise(" - ", KEY)
