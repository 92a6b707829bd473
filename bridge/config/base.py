"""The base of every config model: unknown keys refused, inputs hidden, `<key>_file` read."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

from bridge.config.credentials import _FileProblem
from bridge.config.sources import _read_secret_file


class _Model(BaseModel):
    """Base of every config model: unknown keys are errors, inputs never appear in errors."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    # YAML keys that hold a secret and may instead be read from `<key>_file`.
    secret_keys: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not cls.secret_keys or not isinstance(data, dict):
            return data
        data = dict(data)
        for key in cls.secret_keys:
            file_key = f"{key}_file"
            if file_key not in data:
                continue
            path = data.pop(file_key)
            if key in data:
                data[key] = _FileProblem(key, f"give {key} or {file_key}, not both")
            else:
                data[key] = _read_secret_file(key, path)
        return data
