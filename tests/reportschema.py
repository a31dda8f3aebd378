"""report.json against docs/report.schema.json: every report a test makes is checked here."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import jsonschema

SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "report.schema.json"


@lru_cache(maxsize=1)
def _validator():
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema() -> dict:
    return _validator().schema


def assert_valid_report(d: dict) -> None:
    """Fails with every place the report breaks the schema (a JSON round trip first: what is
    checked is what report.json holds)."""
    d = json.loads(json.dumps(d, default=str))
    errors = sorted(_validator().iter_errors(d), key=lambda e: list(e.path))
    assert not errors, "report.json breaks docs/report.schema.json:\n" + "\n".join(
        f"  {'/'.join(map(str, e.path)) or '(top)'}: {e.message[:200]}" for e in errors[:10])
