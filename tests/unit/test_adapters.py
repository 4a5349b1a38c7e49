"""The four feeds' pure mapping functions, the shared helpers, and the delivery logic (with a fake broker)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from pingan.errors import InvalidEvent, ServiceError
from pingan.feeds import load_feeds
from pingan.producers.adapters import adapter_for
from pingan.producers.adapters.base import (
    FeedAdapter,
    Mapped,
    RecordError,
    event_id,
    parse_time,
    redact,
    scrub_text,
    split_document,
)
from pingan.producers.adapters.delivery import FeedPublisher, OutRecord, RetryPolicy, out_records
from pingan.producers.pseudonym import pseudonymise
from pingan.schemas.envelope import parse_event
from tests.support.defaults import default_settings

SETTINGS = default_settings()
KEY = SETTINGS.pseudonym_key.get_secret_value().encode()
FEEDS = load_feeds(SETTINGS, entry_points=[])
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def adapter(name: str) -> FeedAdapter:
    return adapter_for(SETTINGS, FEEDS[name])


def envelope_of(name: str, record: dict) -> dict:
    result = adapter(name).map_record(record, orjson.dumps(record), "test", now=NOW)
    assert result.error is None, result.error
    assert result.envelope is not None
    return result.envelope


def error_of(name: str, record: dict | bytes) -> tuple[RecordError, Mapped]:
    raw = record if isinstance(record, bytes) else orjson.dumps(record)
    result = adapter(name).map_line(raw, "test", now=NOW)
    assert result.error is not None, result.envelope
    return result.error, result


# --- times ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23 19:05:00", datetime(2026, 11, 23, 11, 5, tzinfo=UTC)),  # Beijing time, no offset
        ("2026/11/23 9:05", datetime(2026, 11, 23, 1, 5, tzinfo=UTC)),  # Excel style
        ("20261123190500", datetime(2026, 11, 23, 11, 5, tzinfo=UTC)),  # compact
        ("2026-11-23T19:05:00.250", datetime(2026, 11, 23, 11, 5, 0, 250_000, tzinfo=UTC)),
        ("2026-11-23T11:05:00Z", datetime(2026, 11, 23, 11, 5, tzinfo=UTC)),  # offsets are taken as written
        ("2026-11-23 19:05:00+08:00", datetime(2026, 11, 23, 11, 5, tzinfo=UTC)),
        ("2026-11-23T06:05:00-0500", datetime(2026, 11, 23, 11, 5, tzinfo=UTC)),
        ("2026-01-01 07:30:00", datetime(2025, 12, 31, 23, 30, tzinfo=UTC)),  # crosses the date line in UTC
        (1795431900, datetime(2026, 11, 23, 11, 5, tzinfo=UTC)),  # epoch seconds are UTC
        (1795431900000, datetime(2026, 11, 23, 11, 5, tzinfo=UTC)),  # epoch milliseconds
        ("1795431900", datetime(2026, 11, 23, 11, 5, tzinfo=UTC)),
        ("２０２６-11-23 19:05:00", datetime(2026, 11, 23, 11, 5, tzinfo=UTC)),  # full-width digits
    ],
)
def test_times_without_offset_are_local_and_come_out_utc(value: object, expected: datetime) -> None:
    assert parse_time(value, "time", SHANGHAI) == expected


@pytest.mark.parametrize(
    ("value", "kind"),
    [("yesterday", "invalid_field"), ("2026-13-01 00:00:00", "out_of_range"), (True, "invalid_field")],
)
def test_bad_times(value: object, kind: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_time(value, "reported_at", SHANGHAI)
    assert (caught.value.kind, caught.value.field) == (kind, "reported_at")


def test_event_ids_are_deterministic_and_always_valid() -> None:
    assert event_id("cad", "JJ2026112300123") == "cad-JJ2026112300123"
    chinese = event_id("cad", "成华-2026-001")
    assert chinese == event_id("cad", "成华-2026-001") and chinese.startswith("cad-h")
    assert event_id("cad", "x" * 200).startswith("cad-h")


# --- call110 -------------------------------------------------------------------------------------------

CAD = {
    "jjdbh": "JJ2026112300123",
    "警情类别": "刑事",
    "jqjb": "一级",
    "bjsj": "2026-11-23 19:05:00",
    "pjsj": "2026-11-23 19:07:30",
    "jasj": "",
    "lon": "104.0612",
    "lat": "30.6701",
    "bjrdh": "13800001111",
    "bjrxm": "张三",
}


def test_call110_cad_row_to_envelope() -> None:
    assert envelope_of("call110", CAD) == {
        "event_id": "cad-JJ2026112300123",
        "source": "call110",
        "type": "criminal",
        "severity": 4,
        "event_time": "2026-11-23T11:05:00Z",
        "location": {"lon": 104.0612, "lat": 30.6701},
        "payload": {
            "incident_id": "JJ2026112300123",
            "category": "criminal",
            "priority": 1,
            "reported_at": "2026-11-23T11:05:00Z",
            "dispatched_at": "2026-11-23T11:07:30Z",
        },
    }


def test_call110_english_codes_grid_and_epoch_times() -> None:
    record = {
        "incident_id": "A1",
        "category": "NON_POLICE",
        "priority": 3,
        "reported_at": 1795431900,
        "closed_at": "2026-11-23T12:00:00Z",
        "grid_id": "G0001",
    }
    envelope = envelope_of("call110", record)
    assert (envelope["type"], envelope["severity"], envelope["grid_id"]) == ("non_police", 1, "G0001")
    assert envelope["payload"]["closed_at"] == "2026-11-23T12:00:00Z"
    assert "location" not in envelope


def test_call110_never_copies_the_caller() -> None:
    raw = orjson.dumps(envelope_of("call110", CAD))
    assert b"13800001111" not in raw and "张三".encode() not in raw


@pytest.mark.parametrize(
    ("change", "kind", "field"),
    [
        ({"警情类别": "外星人"}, "unknown_category", "category"),
        ({"jjdbh": ""}, "missing_field", "incident_id"),
        ({"jqjb": "9"}, "out_of_range", "priority"),
        ({"jqjb": "urgent"}, "invalid_field", "priority"),
        ({"bjsj": "soon"}, "invalid_field", "reported_at"),
        ({"pjsj": "2026-11-23 18:00:00"}, "out_of_range", "dispatched_at"),
        ({"lon": "204.0"}, "out_of_range", "lon"),
        ({"lat": None}, "missing_field", "lat"),
        ({"lon": None, "lat": None}, "missing_field", "location"),
        (
            {"bjsj": "2026-11-25 19:05:00", "pjsj": None},
            "future_timestamp",
            "event_time",
        ),  # the worker's own check, at the edge
    ],
)
def test_call110_bad_records_are_errors(change: dict, kind: str, field: str) -> None:
    error, _ = error_of("call110", {**CAD, **change})
    assert (error.kind, error.field) == (kind, field)


def test_call110_dead_letter_is_pseudonymised() -> None:
    error, result = error_of("call110", {**CAD, "警情类别": "外星人"})
    assert error.kind == "unknown_category"
    assert b"13800001111" not in result.raw and "张三".encode() not in result.raw
    assert orjson.loads(result.raw)["bjrdh"] == pseudonymise("13800001111", KEY)
    assert result.redacted


def test_not_json_and_not_an_object() -> None:
    assert error_of("call110", b"{broken")[0].kind == "bad_json"
    assert error_of("call110", b"[1, 2]")[0].kind == "bad_json"


# --- camera --------------------------------------------------------------------------------------------

BATCH = {
    "platform": "xueliang-3",
    "camera_id": "C-0042",
    "lon": 104.07,
    "lat": 30.66,
    "alerts": [
        {"alarm_id": "A-1", "type": "打架斗殴", "score": 93, "count": 3, "time": "2026-11-23 19:50:00"},
        {"type": "crowd_density", "confidence": "40%", "people": 120, "time": 1795434600000, "grid_id": "G7"},
        {"alarm_id": "A-3", "type": "UFO", "score": 0.5, "time": "2026-11-23 19:50:00"},
        "not an alert",
    ],
}


def test_camera_webhook_batch_to_envelopes_and_errors() -> None:
    results = adapter("camera").map_document(orjson.dumps(BATCH), "webhook", now=NOW)
    assert [r.origin for r in results] == ["webhook#0", "webhook#1", "webhook#2", "webhook#3"]
    assert results[0].envelope == {
        "event_id": "cam-C-0042-A-1",
        "source": "camera",
        "type": "fight",
        "severity": 4,
        "event_time": "2026-11-23T11:50:00Z",
        "location": {"lon": 104.07, "lat": 30.66},  # the batch's defaults
        "device_id": "C-0042",
        "payload": {"camera_id": "C-0042", "analytic": "fight", "confidence": 0.93, "count": 3},
    }
    assert results[1].envelope == {
        "event_id": "cam-C-0042-crowd_density-1795434600000",  # no alert id: derived, stable on re-send
        "source": "camera",
        "type": "crowd_density",
        "severity": 1,
        "event_time": "2026-11-23T11:50:00Z",
        "location": {"lon": 104.07, "lat": 30.66},
        "grid_id": "G7",
        "device_id": "C-0042",
        "payload": {"camera_id": "C-0042", "analytic": "crowd_density", "confidence": 0.4, "count": 120},
    }
    assert results[2].error == RecordError(
        "unknown_category", "analytic", "analytic 'UFO' is not in the [feeds.camera.types] table of the feeds config"
    )
    # the alert with the batch's defaults, not the whole batch: replayable alone
    defaults = {k: v for k, v in BATCH.items() if k != "alerts"}
    assert orjson.loads(results[2].raw) == {**defaults, **BATCH["alerts"][2]}
    assert results[3].error is not None and results[3].error.kind == "bad_json"


def test_camera_a_list_body_and_a_broken_body() -> None:
    body = orjson.dumps([{**BATCH["alerts"][0], "camera_id": "C-1", "grid_id": "G1"}])
    [one] = adapter("camera").map_document(body, "wh", now=NOW)
    assert one.envelope is not None and one.envelope["event_id"] == "cam-C-1-A-1"
    [broken] = adapter("camera").map_document(b'{"alerts": [', "wh", now=NOW)
    assert broken.error is not None and broken.error.kind == "bad_json" and broken.raw == b'{"alerts": ['


def test_camera_confidence_out_of_range() -> None:
    alert = {"camera_id": "C-1", "type": "fight", "score": 150, "time": "2026-11-23 19:00:00", "grid_id": "G1"}
    assert error_of("camera", alert)[0].field == "confidence"


# --- checkpoint ----------------------------------------------------------------------------------------

PASS = {
    "kkbh": "KK-07",
    "fx": "进城",
    "hphm": "川A·12345",
    "gcsj": "20261123190500",
    "cllx": "大型货车",
    "是否布控": "是",
    "grid_id": "G0101",
}


def test_checkpoint_pass_with_the_plate_pseudonymised() -> None:
    plate_hash = pseudonymise("川A12345", KEY)
    assert envelope_of("checkpoint", PASS) == {
        "event_id": f"kk-KK-07-1795431900000-in-{plate_hash}",
        "source": "checkpoint",
        "type": "flagged_pass",
        "severity": 3,
        "event_time": "2026-11-23T11:05:00Z",
        "grid_id": "G0101",
        "device_id": "KK-07",
        "payload": {
            "checkpoint_id": "KK-07",
            "direction": "in",
            "flagged": True,
            "plate_hash": plate_hash,
            "vehicle_class": "truck",
        },
    }


def test_checkpoint_plain_pass_unreadable_plate_and_pass_id() -> None:
    record = {**PASS, "是否布控": "否", "hphm": "未识别", "gcxh": "000981", "cllx": "三轮车"}
    envelope = envelope_of("checkpoint", record)
    assert envelope["event_id"] == "kk-KK-07-000981"
    assert envelope["type"] == "pass" and envelope["severity"] == 1
    assert envelope["payload"] == {
        "checkpoint_id": "KK-07",
        "direction": "in",
        "flagged": False,
        "vehicle_class": "other",
    }


def test_checkpoint_raw_plate_never_leaves_the_adapter() -> None:
    spellings = ("川A·12345", "川A12345", "川a 12345")
    good = adapter("checkpoint").map_record(PASS, orjson.dumps(PASS), "t", now=NOW)
    bad_direction = {**PASS, "fx": "sideways"}
    bad = adapter("checkpoint").map_line(orjson.dumps(bad_direction), "t", now=NOW)
    not_json = adapter("checkpoint").map_line('{"hphm": "川A·12345", broken'.encode(), "t", now=NOW)
    assert good.envelope is not None and bad.error is not None and not_json.error is not None
    for value in (*out_records([good, bad, not_json], topic="e", dead_letter_topic="d", key_for=lambda _: None),):
        blob = value.value + b"".join(h for _, h in value.headers)
        for spelling in spellings:
            assert spelling.encode() not in blob
    assert bad.redacted and not_json.redacted
    # A pseudonymised dead letter can be replayed once fixed: the pseudonym is not hashed again.
    fixed = {**orjson.loads(bad.raw), "fx": "in"}
    assert envelope_of("checkpoint", fixed)["payload"]["plate_hash"] == pseudonymise("川A12345", KEY)


def test_checkpoint_bad_direction_and_flag() -> None:
    assert error_of("checkpoint", {**PASS, "fx": "up"})[0].field == "direction"
    assert error_of("checkpoint", {**PASS, "是否布控": "maybe"})[0].field == "flagged"


# --- app reports ---------------------------------------------------------------------------------------

REPORT = {
    "sjbh": "SJ-20261123-0077",
    "上报人类型": "群众",
    "phone": "13912345678",
    "事件类型": "矛盾纠纷",
    "内容": "楼上装修噪音，联系电话139 1234 5678，车停在川A12345旁",
    "photos": ["p1.jpg", "p2.jpg"],
    "上报时间": "2026-11-23 18:30:00",
    "lon": 104.05,
    "lat": 30.65,
}


def test_app_report_to_envelope_with_reporter_pseudonymised_and_text_masked() -> None:
    assert envelope_of("app_report", REPORT) == {
        "event_id": "app-SJ-20261123-0077",
        "source": "app_report",
        "type": "dispute",
        "severity": 2,
        "event_time": "2026-11-23T10:30:00Z",
        "location": {"lon": 104.05, "lat": 30.65},
        "payload": {
            "report_id": "SJ-20261123-0077",
            "reporter_role": "citizen",
            "category": "dispute",
            "text": "楼上装修噪音,联系电话[电话],车停在[车牌]旁",  # NFKC turns the full-width commas to ASCII
            "photo_count": 2,
            "reporter_id": pseudonymise("13912345678", KEY),
        },
    }


def test_app_report_grid_worker_one_click_alarm() -> None:
    record = {"report_id": "R9", "role": "网格员", "category": "一键报警", "time": "2026-11-23 19:00", "grid_id": "G1"}
    envelope = envelope_of("app_report", record)
    assert (envelope["type"], envelope["severity"]) == ("one_click_alarm", 4)
    assert envelope["payload"] == {
        "report_id": "R9",
        "reporter_role": "grid_worker",
        "category": "one_click_alarm",
        "text": "",
        "photo_count": 0,
    }


def test_app_report_bad_records() -> None:
    assert error_of("app_report", {**REPORT, "上报人类型": "robot"})[0].field == "reporter_role"
    assert error_of("app_report", {**REPORT, "photos": "p1.jpg"})[0].field == "photos"
    assert error_of("app_report", {**REPORT, "photos": ["p"] * 60})[0].kind == "out_of_range"
    error, result = error_of("app_report", {**REPORT, "事件类型": "chat"})
    assert error.kind == "unknown_category"
    assert b"13912345678" not in result.raw and "川A12345".encode() not in result.raw


def test_app_report_long_text_is_cut_to_the_payload_limit() -> None:
    envelope = envelope_of("app_report", {**REPORT, "内容": "很长" * 1500})
    assert len(envelope["payload"]["text"]) == 2000


# --- shared pieces -------------------------------------------------------------------------------------


def test_every_envelope_passes_the_workers_parse_event() -> None:
    for name, record in (("call110", CAD), ("checkpoint", PASS), ("app_report", REPORT)):
        parse_event(orjson.dumps(envelope_of(name, record)), now=NOW)


def test_a_mapper_bug_costs_one_record() -> None:
    def broken(record: dict, ctx: object) -> dict:
        raise ZeroDivisionError("oops")

    spec_adapter = adapter("camera")
    result = dataclasses.replace(spec_adapter, mapper=broken).map_line(b"{}", "t", now=NOW)
    assert result.error is not None and result.error.kind == "internal_error" and "oops" in result.error.reason


def test_split_document_shapes() -> None:
    records, unreadable = split_document(b'{"a": 1}\n\n{"b": 2}\nnope\n')
    assert unreadable is None
    assert [r for _, r in records][:2] == [{"a": 1}, {"b": 2}]
    assert isinstance(records[2][1], InvalidEvent)
    assert split_document(b'{"id": 1}') == ([(b'{"id": 1}', {"id": 1})], None)
    assert split_document(b"42") == ([], b"42")


def test_scrub_and_redact_leave_clean_records_alone() -> None:
    assert scrub_text("井盖缺失，位于人民路") == "井盖缺失，位于人民路"
    assert scrub_text("身份证510104199001011234") == "身份证[身份证]"
    clean = b'{"a": "\xe4\xba\xba", "n": 1}'
    assert redact(clean, KEY) is clean
    assert redact(b"not json 13800001111", KEY) == b"not json [\xe7\x94\xb5\xe8\xaf\x9d]"


def test_out_records_headers_match_the_workers() -> None:
    mapped = [
        Mapped("file:x@0", envelope={"event_id": "e", "grid_id": "G1"}),
        adapter("call110").failed(
            b'{"phone": "13800001111"}', "file:/x@10", RecordError("missing_field", "priority", "no priority"), now=NOW
        ),
    ]
    event, letter = out_records(mapped, topic="t.events", dead_letter_topic="t.dlq", key_for=lambda e: b"G1")
    assert (event.topic, event.key, orjson.loads(event.value)) == ("t.events", b"G1", mapped[0].envelope)
    redacted = mapped[1].raw
    assert b"13800001111" not in redacted and orjson.loads(redacted)["phone"].startswith("p1:")
    assert (letter.topic, letter.key, letter.value) == ("t.dlq", None, redacted)
    assert dict(letter.headers) == {
        "pingan-error-kind": b"missing_field",
        "pingan-error-field": b"priority",
        "pingan-error-reason": b"no priority",
        "pingan-origin": b"file:/x@10",
        "pingan-source": b"tailer",
        "pingan-feed": b"call110",
        "pingan-adapter": b"pingan.producers.adapters.call110:map_incident",
        "pingan-received-at": str(int(NOW.timestamp() * 1000)).encode(),
        "pingan-raw-size": str(len(redacted)).encode(),
        "pingan-raw-sha256": hashlib.sha256(redacted).hexdigest().encode(),
        "pingan-redacted": b"1",
    }


# --- delivery with a fake broker -----------------------------------------------------------------------


class FlakySender:
    """Fails the first send of chosen records, then delivers; records what reached the 'broker'."""

    def __init__(self, fail_first: set[bytes], *, always: bool = False) -> None:
        self.fail_first = set(fail_first)
        self.always = always
        self.delivered: list[bytes] = []
        self.calls = 0

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def key_for(self, envelope: dict) -> bytes | None:
        return envelope.get("grid_id", "").encode() or None

    async def send_records(self, records: Sequence[OutRecord]) -> list[int]:
        self.calls += 1
        failed = []
        for index, record in enumerate(records):
            if record.value in self.fail_first:
                if not self.always:
                    self.fail_first.discard(record.value)
                failed.append(index)
            else:
                self.delivered.append(record.value)
        return failed


async def test_publish_resends_only_what_failed_with_backoff() -> None:
    mapped = [Mapped("o", envelope={"event_id": f"e{i}", "grid_id": "G1"}) for i in range(5)]
    values = [orjson.dumps(m.envelope) for m in mapped]
    sender = FlakySender({values[1], values[3]})
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    publisher = FeedPublisher(SETTINGS, sender=sender, sleep=sleep, retry=RetryPolicy(initial_delay=0.1))
    report = await publisher.publish(mapped)
    assert sorted(sender.delivered) == sorted(values)  # each exactly once
    assert (report.events, report.dead_letters, report.retries, sleeps) == (5, 0, 1, [0.1])


async def test_publish_gives_up_after_the_attempts() -> None:
    mapped = [Mapped("o", envelope={"event_id": "e", "grid_id": "G1"})]
    sender = FlakySender({orjson.dumps(mapped[0].envelope)}, always=True)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    publisher = FeedPublisher(SETTINGS, sender=sender, sleep=sleep, retry=RetryPolicy(0.5, 1.0, max_attempts=4))
    with pytest.raises(ServiceError, match="1 of 1 records were not delivered"):
        await publisher.publish(mapped)
    assert (sender.calls, sleeps) == (4, [0.5, 1.0, 1.0])


def test_retry_policy_delays() -> None:
    assert list(RetryPolicy(0.2, 1.0, max_attempts=5).delays()) == [0.2, 0.4, 0.8, 1.0]
    unlimited = RetryPolicy(1.0, 2.0).delays()
    assert [next(unlimited) for _ in range(4)] == [1.0, 2.0, 2.0, 2.0]


def test_max_future_follows_the_settings() -> None:
    strict = adapter_for(SETTINGS.model_copy(update={"max_future_seconds": 0}), FEEDS["call110"])
    assert strict.rules is not None and strict.rules.max_future == timedelta(0)


def test_a_huge_bad_record_is_cut_so_the_broker_takes_it() -> None:
    from pingan.dead_letter import MAX_RAW_BYTES

    huge = b"x" * (MAX_RAW_BYTES * 2)
    result = adapter("call110").map_line(huge, "t", now=NOW)
    assert result.letter is not None and len(result.raw) == MAX_RAW_BYTES
    assert (result.letter.raw_size, result.letter.raw_sha256) == (len(huge), hashlib.sha256(huge).hexdigest())
    assert result.letter.kind == "bad_json" and f"its first {MAX_RAW_BYTES} are kept" in result.letter.reason
