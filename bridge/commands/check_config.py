"""`absorb-bridge check-config`: validate the config and show what the bridge would run with."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

import yaml

from bridge.config import ConfigError, config_path, load_config

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
    yaml.safe_dump(config.masked(), out, sort_keys=False, allow_unicode=True)
    return EXIT_OK
