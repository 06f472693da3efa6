"""PluginEnvironment: the read-only settings a plugin job runs with."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["MASK", "PluginEnvironment", "is_secret_name", "mask_secrets"]

MASK = "***"
_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "PRIVATE")
_TRUE = frozenset({"1", "true", "yes", "y", "on", "t"})
_FALSE = frozenset({"0", "false", "no", "n", "off", "f", ""})


def is_secret_name(name: str) -> bool:
    """True for names that look like they hold a secret (API_KEY, DB_PASSWORD, ...)."""
    upper = name.upper()
    return any(marker in upper for marker in _SECRET_MARKERS)


def mask_secrets(values: Mapping[str, Any]) -> dict[str, str]:
    """A copy fit to store in a manifest: secret-looking values replaced by `MASK`."""
    return {k: (MASK if is_secret_name(k) else str(v)) for k, v in values.items()}


class PluginEnvironment(Mapping[str, Any]):
    """Read-only mapping of a plugin's settings, with typed getters.

    Build it from a dict, `from_environ(prefix)` or `from_file(path)` (dotenv style
    `KEY=VALUE` lines, or a `.json`/`.toml` file), and combine with `merge`.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self._values: dict[str, Any] = dict(values or {})

    @classmethod
    def from_environ(cls, prefix: str = "", *, strip_prefix: bool = True) -> PluginEnvironment:
        """Variables of this process whose names start with `prefix`."""
        values = {}
        for name, value in os.environ.items():
            if name.startswith(prefix):
                values[name[len(prefix) :] if strip_prefix and prefix else name] = value
        return cls(values)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PluginEnvironment:
        """Settings from a dotenv (`KEY=VALUE`), `.json` or `.toml` file.

        Raises `FileNotFoundError` if the file is missing and `ValueError` naming the
        line for a dotenv line that is not `KEY=VALUE`.
        """
        file = Path(path)
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".json":
            import json

            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"{file}: expected a JSON object of settings")
            return cls(data)
        if file.suffix == ".toml":
            import tomllib

            return cls(tomllib.loads(text))
        values: dict[str, str] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export ") :].lstrip()
            name, sep, value = line.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{file} line {number}: expected KEY=VALUE, got {raw!r}")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[name.strip()] = value
        return cls(values)

    @classmethod
    def merge(cls, *envs: Mapping[str, Any]) -> PluginEnvironment:
        """One environment from several; later ones win on the same name."""
        values: dict[str, Any] = {}
        for env in envs:
            values.update(env)
        return cls(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"PluginEnvironment({mask_secrets(self._values)!r})"

    def get_str(self, key: str, default: str | None = None) -> str | None:
        value = self._values.get(key)
        return default if value is None else str(value)

    def get_int(self, key: str, default: int | None = None) -> int | None:
        """The value as an int; `ValueError` naming the key if it is not one."""
        value = self._values.get(key)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError(f"setting {key}={value!r} is not an integer") from None

    def get_float(self, key: str, default: float | None = None) -> float | None:
        """The value as a float; `ValueError` naming the key if it is not one."""
        value = self._values.get(key)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"setting {key}={value!r} is not a number") from None

    def get_bool(self, key: str, default: bool = False) -> bool:
        """'true'/'1'/'yes'/'on' are True, 'false'/'0'/'no'/'off'/'' are False."""
        value = self._values.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"setting {key}={value!r} is not a boolean (use true/false, 1/0)")

    def get_list(
        self, key: str, default: list[str] | None = None, separator: str = ","
    ) -> list[str]:
        """A comma-separated value as a list of stripped, non-empty strings."""
        value = self._values.get(key)
        if value is None:
            return list(default or [])
        if isinstance(value, list | tuple):
            return [str(item) for item in value]
        return [part.strip() for part in str(value).split(separator) if part.strip()]

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)
