"""JSON Schema files for producers written in other languages: `pingan schemas export`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from pingan.schemas.envelope import Envelope
from pingan.schemas.payloads import SOURCE_PAYLOADS

SCHEMA_DIR = Path(__file__).resolve().parent / "jsonschema"


def build_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema: the envelope, and one complete event schema per source."""
    schemas: dict[str, dict[str, Any]] = {"envelope.schema.json": Envelope.model_json_schema()}
    for source, payload_model in sorted(SOURCE_PAYLOADS.items()):
        event = Envelope.model_json_schema()
        payload = payload_model.model_json_schema()
        event["$defs"] = {**event.get("$defs", {}), **payload.pop("$defs", {})}
        event["title"] = f"{source} event"
        event["properties"]["source"] = {"const": source, "title": "Source", "type": "string"}
        event["properties"]["payload"] = payload
        schemas[f"{source}.schema.json"] = event
    return schemas


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in build_schemas().items():
        path = directory / name
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        written.append(path)
    return written
