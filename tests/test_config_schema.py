"""`absorb-bridge config-schema` against the files people write: every shipped config
passes, the documented forms (`30s`, `*_file`, `${ENV}`) pass, mistakes do not, and
every key says what it is."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [*sorted(ROOT.glob("config/*.yaml")), ROOT / "deploy" / "compose-config.yaml"]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    """The schema as the command prints it."""
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "config-schema"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_passes(
    validator: jsonschema.Draft202012Validator, path: Path
) -> None:
    """Each config in config/ and deploy/ is valid as written (before ${ENV} is read)."""
    assert _errors(validator, yaml.safe_load(path.read_text())) == []


def _example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    return data


def test_documented_forms_pass(validator: jsonschema.Draft202012Validator) -> None:
    """Durations as text or seconds, `password_file` instead of `password`, `${ENV}` in a
    number, a boolean or an enum all pass."""
    config = _example()
    feed = config["feeds"][0]
    feed.update(interval="500ms", lookback=600, reconcile_every="1d", progress_events="${P}")
    feed["first_sync"] = "${FIRST_SYNC}"
    config["absorb"].pop("password")
    config["absorb"]["password_file"] = "/run/secrets/absorb-password"
    config["absorb"]["page_size"] = "${PAGE_SIZE}"
    config["sinks"][1]["retry_schedule"] = ["5s", 30, "2m"]
    assert _errors(validator, config) == []


@pytest.mark.parametrize(
    ("where", "value", "complaint"),
    [
        (("feeds", 0, "interval"), "soon", "interval"),
        (("feeds", 0, "resource"), "courses", "resource"),
        (("absorb", "page_size"), "many", "page_size"),
        (("feeds", 0, "intervall"), "30s", "intervall"),
    ],
)
def test_mistakes_fail(
    validator: jsonschema.Draft202012Validator,
    where: tuple[Any, ...],
    value: Any,
    complaint: str,
) -> None:
    """A bad duration, an unknown enum value, text in a number and a misspelt key fail."""
    config = copy.deepcopy(_example())
    target: Any = config
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    errors = _errors(validator, config)
    assert errors
    assert any(complaint in e for e in errors), errors


def test_a_secret_and_its_file_are_one_or_the_other(
    validator: jsonschema.Draft202012Validator,
) -> None:
    """Neither `password` nor `password_file` fails; both at once fails too."""
    config = _example()
    config["absorb"].pop("password")
    assert _errors(validator, config)
    config["absorb"]["password"] = "x"
    config["absorb"]["password_file"] = "/run/secrets/p"
    assert _errors(validator, config)


def test_every_key_has_a_description(validator: jsonschema.Draft202012Validator) -> None:
    """Editors show a description for every key of every section."""
    missing: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.get("properties", {}).items():
                if not value.get("description"):
                    missing.append(f"{path}.{key}")
                walk(value, f"{path}.{key}")
            for key, value in node.items():
                if key != "properties":
                    walk(value, path)
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    walk(validator.schema, "")
    assert missing == []
