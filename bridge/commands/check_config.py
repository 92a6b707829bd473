"""`absorb-bridge check-config`: validate the config and show what the bridge would run with."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import yaml

from bridge.config import ConfigError, config_path, load_config
from bridge.redaction import mask_url

EXIT_OK, EXIT_BAD_CONFIG, EXIT_USAGE = 0, 1, 2
_PROG = "absorb-bridge check-config"


def check_config(
    path_arg: str | None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the effective config, secrets masked, and return 0; or every problem and 1.

    Without `--config` or ABSORB_BRIDGE_CONFIG it is a usage error (2). `out` and
    `err` default to the process's stdout and stderr at the time of the call.
    """
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        path = config_path(path_arg, env)
    except ConfigError as e:
        print(f"{_PROG}: {e}", file=err)
        return EXIT_USAGE
    try:
        config, warnings = load_config(path, env)
    except ConfigError as e:
        count = len(e.problems)
        print(f"{_PROG}: {count} problem{'' if count == 1 else 's'} in {path}:", file=err)
        for problem in e.problems:
            print(f"  {problem}", file=err)
        return EXIT_BAD_CONFIG
    for warning in warnings:
        print(f"warning: {warning}", file=err)
    yaml.safe_dump(_urls_masked(config.masked()), out, sort_keys=False, allow_unicode=True)
    return EXIT_OK


def _urls_masked(value: Any) -> Any:
    # Any string may be a URL given literally (a sink's url, a header, a base_url):
    # the URL types mask their own, this catches credentials everywhere else.
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {key: _urls_masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_urls_masked(item) for item in value]
    return value
