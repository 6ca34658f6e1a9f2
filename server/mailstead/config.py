"""Configuration: a TOML file, validated against a schema, with MAILSTEAD_* overrides.

Every key is declared once in ``SCHEMA`` (``config_schema``) with its type and default;
unknown keys and wrong types are errors naming the key, so a typo never silently falls back
to a default.
Relative paths resolve against the folder of the config file.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .config_rules import VALUE_CHECKS
from .config_schema import (
    CHOICES,
    LISTEN_LIST,
    MAX_WORKERS,
    PATH_VALUE,
    POSITIVE,
    RANGES,
    SCHEMA,
    WORKERS_VALUE,
)
from .config_sections import SECTIONS, Config


class ConfigError(Exception):
    """A configuration problem, worded for the person who wrote the file."""


@dataclass(frozen=True)
class Listen:
    """One listening address."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _check_sections_match_schema() -> None:
    """A key added to SCHEMA without its field (or the reverse) fails at import, loudly."""
    if set(SECTIONS) != set(SCHEMA):
        raise AssertionError(f"config sections differ: {sorted(set(SECTIONS) ^ set(SCHEMA))}")
    for name, cls in SECTIONS.items():
        declared = {f.name for f in fields(cls)}
        if declared != set(SCHEMA[name]):
            raise AssertionError(
                f"[{name}] fields of {cls.__name__} differ from SCHEMA: "
                f"{sorted(declared ^ set(SCHEMA[name]))}"
            )


_check_sections_match_schema()


def parse_listen(value: str, where: str) -> Listen:
    """``host:port`` or ``[v6]:port``; the host must be a literal address or a name."""
    if not isinstance(value, str):
        raise ConfigError(f'{where}: expected a "host:port" string, got {value!r}')
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f'{where}: {value!r} is not "[address]:port"')
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ConfigError(
                f'{where}: {value!r} is not "host:port" (write IPv6 addresses as [::1]:143)'
            )
    if not host:
        raise ConfigError(f"{where}: {value!r} has no host (use 0.0.0.0 or :: for all)")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{where}: port {port_text!r} in {value!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}: port {port} in {value!r} is out of range 0-65535")
    return Listen(host, port)


def _coerce(section: str, key: str, kind: Any, value: Any, base: Path) -> Any:
    coerced = _coerce_type(section, key, kind, value, base)
    check = VALUE_CHECKS.get((section, key))
    if check is not None:
        try:
            check(coerced)
        except ValueError as exc:
            raise ConfigError(f"[{section}] {key}: {exc}") from None
    return coerced


def _coerce_type(section: str, key: str, kind: Any, value: Any, base: Path) -> Any:
    where = f"[{section}] {key}"
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind is int or kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind is int and not isinstance(value, int)
        ):
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{where}: expected {what}, got {value!r}")
        bounds = RANGES.get((section, key))
        if bounds and not bounds[0] <= value <= bounds[1]:
            raise ConfigError(
                f"{where}: must be between {bounds[0]:,} and {bounds[1]:,}, got {value:,}"
            )
        if (section, key) in POSITIVE and value <= 0:
            raise ConfigError(f"{where}: must be greater than 0, got {value}")
        if value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value}")
        return kind(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        choices = CHOICES.get((section, key))
        if choices and value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(v.lower() for v in value) if key == "domains" else tuple(value)
    if kind == LISTEN_LIST:
        if not isinstance(value, list):
            raise ConfigError(f'{where}: expected a list of "host:port" strings, got {value!r}')
        return tuple(parse_listen(v, where) for v in value)
    if kind == WORKERS_VALUE:
        return _workers(value, where)
    if kind == PATH_VALUE:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        if not value:
            return None
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else (base / path).resolve()
    raise AssertionError(kind)


def _workers(value: Any, where: str) -> int:
    """``N`` or ``"auto"`` (one worker per core the system reports)."""
    if value == "auto":
        return max(1, min(os.cpu_count() or 1, MAX_WORKERS))
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f'{where}: expected a number of processes or "auto", got {value!r}')
    if not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f"{where}: must be between 1 and {MAX_WORKERS}, got {value}")
    return value


def _env_value(raw: str, kind: Any) -> Any:
    """Environment overrides are strings; read them as TOML values where that makes sense."""
    if kind in (str, PATH_VALUE):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if kind == LISTEN_LIST or kind is list:
            return [part.strip() for part in raw.split(",") if part.strip()]
        return raw


def load_config(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> Config:
    """Read, validate and resolve a config file (None = defaults relative to cwd)."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        try:
            with file.open("rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except PermissionError:
            raise ConfigError(f"config file {file} is not readable") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {file} is a directory") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file}: invalid TOML: {exc}") from None
        base = file.resolve().parent
    else:
        base = Path.cwd()

    for section, body in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"unknown section [{section}]")
        if not isinstance(body, dict):
            raise ConfigError(f"[{section}] must be a table")
        for key in body:
            if key not in SCHEMA[section]:
                raise ConfigError(f"[{section}] {key}: unknown key")

    for name, value in env.items():
        if not name.startswith("MAILSTEAD_") or "__" not in name:
            continue
        section, _, key = name[len("MAILSTEAD_") :].lower().partition("__")
        if section not in SCHEMA or key not in SCHEMA[section]:
            raise ConfigError(f"environment variable {name}: no such key [{section}] {key}")
        raw.setdefault(section, {})[key] = _env_value(value, SCHEMA[section][key][0])

    values: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        given = raw.get(section, {})
        values[section] = {
            key: _coerce(section, key, kind, given.get(key, default), base)
            for key, (kind, default) in keys.items()
        }
    if not values["server"]["data_dir"]:
        raise ConfigError("[server] data_dir: must not be empty")
    if not values["server"]["domains"]:
        raise ConfigError("[server] domains: list at least one domain")
    cert, key = values["tls"]["cert"], values["tls"]["key"]
    if bool(cert) != bool(key):
        raise ConfigError("[tls] cert and key: set both or neither")
    relay = values["relay"]
    if relay["username"] and relay["tls"] == "none":
        raise ConfigError("[relay] username: credentials are sent only over TLS; "
                          'set tls = "starttls" or "implicit"')
    if bool(relay["username"]) != bool(relay["password"]):
        raise ConfigError("[relay] username and password: set both or neither")
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    return Config(**sections, path=Path(path).resolve() if path is not None else None)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback
