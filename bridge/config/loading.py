"""Loading the config: which file, reading it, and every problem or warning at once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from bridge.config.checks import _cross_references
from bridge.config.errors import ConfigError, Problem, format_path
from bridge.config.models import _CROSS_CHECKED, Config
from bridge.config.problems import _file_order, _problem
from bridge.config.sources import _load_yaml, _substitute

CONFIG_ENV = "ABSORB_BRIDGE_CONFIG"


def _warnings(config: Config) -> list[str]:
    routed = {name for route in config.routes for name in route.sinks}
    warnings = [
        f"sinks[{i}]: no route names sink {sink.name!r}, so it receives no events"
        for i, sink in enumerate(config.sinks)
        if sink.name not in routed
    ]
    if not config.routes:
        warnings.append("routes: none given, so events are detected but delivered nowhere")
    return warnings


def parse_config(text: str, env: Mapping[str, str] | None = None) -> tuple[Config, list[str]]:
    """The config in `text` and its warnings; ConfigError naming every problem otherwise."""
    env = os.environ if env is None else env
    raw, yaml_problems = _load_yaml(text)
    if raw is None:
        raise ConfigError(["(top level): the file is empty"])
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping with absorb, feeds, sinks, routes"])
    problems: list[Problem] = []
    data = _substitute(raw, env, (), problems)
    unset = {loc for loc, _ in problems}  # their values are placeholders: don't judge them
    problems += _cross_references(data)
    config: Config | None = None
    try:
        config = Config.model_validate(data, context={_CROSS_CHECKED: True})
    except ValidationError as e:
        found = (_problem(error) for error in e.errors(include_url=False, include_input=False))
        problems += [p for p in found if p[0] not in unset]
    if yaml_problems or problems or config is None:
        problems.sort(key=_file_order)
        raise ConfigError(yaml_problems + [f"{format_path(loc)}: {msg}" for loc, msg in problems])
    return config, _warnings(config)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> tuple[Config, list[str]]:
    """The config in the file at `path` and its warnings; ConfigError naming every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError([f"cannot read {path}: {reason}"], path=path) from e
    try:
        return parse_config(text, env)
    except ConfigError as e:
        e.path = path
        raise


def config_path(cli_value: str | None, env: Mapping[str, str] | None = None) -> Path:
    """The config file: `--config`, else ABSORB_BRIDGE_CONFIG; ConfigError if neither."""
    env = os.environ if env is None else env
    value = cli_value or env.get(CONFIG_ENV)
    if not value:
        raise ConfigError(f"no config file: pass --config FILE or set {CONFIG_ENV}")
    return Path(value)
