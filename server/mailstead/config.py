"""Configuration: a TOML file, validated against a schema, with MAILSTEAD_* overrides.

Every key is declared once in ``SCHEMA`` with its type and default; unknown keys and wrong
types are errors naming the key, so a typo never silently falls back to a default.
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
from .config_sections import SECTIONS, Config


class ConfigError(Exception):
    """A configuration problem, worded for the person who wrote the file."""


_ListOfAddr = "listen"  # marker type: list of "host:port" strings
_Path = "path"
_Workers = "workers"  # marker type: a positive integer or "auto"
MAX_WORKERS = 256

# section -> key -> (type, default). Types: bool, int, str, list (of str), _ListOfAddr, _Path.
SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "server": {
        "hostname": (str, "localhost"),
        # Absolute, the FHS place for a service's state (the systemd unit's StateDirectory,
        # the image's volume): a relative default would follow the config file, and
        # /etc/mailstead/mailstead.toml would put mail in /etc. The repository's example
        # sets "../data" for scripts/run.
        "data_dir": (_Path, "/var/lib/mailstead"),
        "domains": (list, ["localhost"]),
        "shutdown_grace": (int, 10),
        # Worker processes (N, or "auto" = one per core); above 1 a supervisor owns the
        # listeners and restarts workers (supervisor.py).
        "workers": (_Workers, 1),
    },
    "store": {
        "backend": (str, "sqlite"),
        "fsync": (bool, True),
    },
    "imap": {
        "listen": (_ListOfAddr, ["127.0.0.1:1143"]),
        "listen_tls": (_ListOfAddr, []),
        "autologout_minutes": (int, 30),
    },
    "pop3": {
        "listen": (_ListOfAddr, ["127.0.0.1:1110"]),
        "listen_tls": (_ListOfAddr, []),
        "idle_timeout_minutes": (int, 10),
        "retr_sets_seen": (bool, True),
        "expire": (str, "NEVER"),
        "login_delay": (int, 0),
    },
    "smtp": {
        "listen": (_ListOfAddr, ["127.0.0.1:1025"]),
        "listen_tls": (_ListOfAddr, []),
        "postmaster": (str, ""),
        # Inbound SPF/DKIM/DMARC on this listener (smtp/inbound_auth.py).
        "inbound_auth": (bool, True),
        "dmarc_reject": (bool, True),  # refuse a DMARC p=reject failure with 550 5.7.1
        "dmarc_quarantine": (str, "junk"),  # p=quarantine failure: "junk" or "inbox"
        "trusted_networks": (list, ["127.0.0.0/8", "::1"]),  # not evaluated
        "inbound_auth_seconds": (float, 10.0),  # DNS and checks per message, then temperror
    },
    "lmtp": {
        "listen": (_ListOfAddr, ["127.0.0.1:1024"]),
    },
    # Mail submission (RFC 6409) for the server's own users: AUTH required, STARTTLS on
    # listen (587), implicit TLS on listen_tls (465, RFC 8314). None by default: a
    # server that only receives opens no submission port unless asked to.
    "submission": {
        "listen": (_ListOfAddr, []),
        "listen_tls": (_ListOfAddr, []),
        "max_recipients": (int, 100),
        "max_messages_per_hour": (int, 200),
        "received_header": (bool, False),
    },
    # Where `mailstead dns --check`, outbound delivery and inbound SPF/DKIM/DMARC ask:
    # [] = the system's resolver.
    "dns": {
        "nameservers": (list, []),
        "port": (int, 53),
    },
    "http": {
        "listen": (_ListOfAddr, []),
        "listen_tls": (_ListOfAddr, []),
        # Who may read /metrics (addresses or networks); [] = nobody.
        "metrics_allow": (list, ["127.0.0.0/8", "::1"]),
        # What autoconfig, Autodiscover and the Apple profile advertise, when clients
        # reach the server under another name or other ports (NAT, Docker): "" and []
        # = [server] hostname and the listeners' own ports. Ports as "imaps:993".
        "public_hostname": (str, ""),
        "public_ports": (list, []),
    },
    "tls": {
        "cert": (_Path, ""),
        "key": (_Path, ""),
    },
    "auth": {
        "plaintext_on_loopback": (bool, True),
        "default_scheme": (str, "argon2"),
        "failure_delay": (float, 0.5),
        "failure_delay_max": (float, 8.0),
        "failure_burst": (int, 10),
        "failure_block_seconds": (int, 300),
        "throttle_loopback": (bool, False),
        "cache_ttl": (int, 300),
        "cache_size": (int, 10000),
        "argon2_memory_kib": (int, 19456),
        "argon2_time_cost": (int, 2),
        "argon2_parallelism": (int, 1),
        "login_queue_seconds": (float, 5.0),
        "max_failures_per_connection": (int, 3),
    },
    "limits": {
        "max_message_size": (int, 50 * 1024 * 1024),
        "max_line_length": (int, 65536),
        "max_connections": (int, 2000),
        "max_connections_per_ip": (int, 50),
        "max_sessions_per_user": (int, 50),
        "login_timeout_seconds": (float, 60.0),
        "tls_handshake_timeout_seconds": (float, 20.0),
        "max_queued_input_bytes": (int, 1024 * 1024),
        "max_logins_in_progress": (int, 16),
        "max_logins_queued": (int, 1000),
        "max_mailboxes_per_user": (int, 1000),
        "max_mailbox_depth": (int, 16),
        "max_store_bytes": (int, 0),
        "max_expensive_commands_per_user": (int, 2),
    },
    # Outbound mail (outbound/): retries, remote MX port, smarthost, resolver.
    "queue": {
        "retry_first": (float, 300.0),  # seconds before the 2nd attempt; doubles after
        "retry_max": (float, 14400.0),
        "queue_lifetime": (float, 5 * 86400.0),
        "poll_seconds": (float, 5.0),  # how often due entries are reread (CLI retry)
        "concurrency": (int, 10),  # destination domains delivered to at once
        "connect_timeout": (float, 30.0),
        "command_timeout": (float, 300.0),
        "mx_port": (int, 25),  # for tests only: the port of every remote MX
    },
    "relay": {
        "host": (str, ""),  # "" = deliver to each domain's MX
        "port": (int, 587),
        "tls": (str, "starttls"),
        "tls_verify": (bool, True),
        "ca_file": (_Path, ""),  # "" = the system's trusted CAs
        "username": (str, ""),
        "password": (str, ""),
    },
    "log": {
        "level": (str, "info"),
        "format": (str, "text"),
    },
}

_CHOICES = {
    ("store", "backend"): ("sqlite",),
    ("auth", "default_scheme"): ("argon2", "bcrypt", "sha512_crypt"),
    ("log", "level"): ("debug", "info", "warn", "error"),
    ("log", "format"): ("text", "json"),
    ("relay", "tls"): ("starttls", "implicit", "none"),
    ("smtp", "dmarc_quarantine"): ("junk", "inbox"),
}
# Bounds (inclusive) beyond "positive" for keys where an absurd value breaks the server.
# max_line_length: below 1,000 octets ordinary commands (an IMAP UID set, a LOGIN with
# a long password) stop fitting; above 1 MiB one unanswered line pins that much memory
# per connection.
_RANGES: dict[tuple[str, str], tuple[int, int]] = {
    ("limits", "max_line_length"): (1000, 1024 * 1024),
    # argon2 below 1 MiB protects little; above 4 GiB or t = 100 one login would stall
    # the server. Parallelism beyond 64 lanes buys nothing.
    ("auth", "argon2_memory_kib"): (1024, 4 * 1024 * 1024),
    ("auth", "argon2_time_cost"): (1, 100),
    ("auth", "argon2_parallelism"): (1, 64),
    # A login waiting longer than a minute for a slot is better told to retry.
    ("auth", "login_queue_seconds"): (0, 60),
    ("dns", "port"): (1, 65535),
    ("queue", "mx_port"): (1, 65535),
    ("relay", "port"): (1, 65535),
    # Past a minute a sender's MTA has given up on the DATA reply.
    ("smtp", "inbound_auth_seconds"): (1, 60),
}
_POSITIVE = {
    ("auth", "failure_burst"),
    ("auth", "max_failures_per_connection"),
    ("limits", "max_logins_in_progress"),
    ("limits", "max_mailboxes_per_user"),
    ("limits", "max_mailbox_depth"),
    ("limits", "max_message_size"),
    ("limits", "max_line_length"),
    ("limits", "max_connections"),
    ("limits", "max_connections_per_ip"),
    ("limits", "login_timeout_seconds"),
    ("limits", "tls_handshake_timeout_seconds"),
    ("limits", "max_queued_input_bytes"),
    ("limits", "max_sessions_per_user"),
    ("limits", "max_expensive_commands_per_user"),
    ("imap", "autologout_minutes"),
    ("submission", "max_recipients"),
    ("submission", "max_messages_per_hour"),
    ("pop3", "idle_timeout_minutes"),
    ("queue", "retry_first"),
    ("queue", "retry_max"),
    ("queue", "queue_lifetime"),
    ("queue", "poll_seconds"),
    ("queue", "concurrency"),
    ("queue", "connect_timeout"),
    ("queue", "command_timeout"),
}


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
        bounds = _RANGES.get((section, key))
        if bounds and not bounds[0] <= value <= bounds[1]:
            raise ConfigError(
                f"{where}: must be between {bounds[0]:,} and {bounds[1]:,}, got {value:,}"
            )
        if (section, key) in _POSITIVE and value <= 0:
            raise ConfigError(f"{where}: must be greater than 0, got {value}")
        if value < 0:
            raise ConfigError(f"{where}: must not be negative, got {value}")
        return kind(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        choices = _CHOICES.get((section, key))
        if choices and value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return value
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(v.lower() for v in value) if key == "domains" else tuple(value)
    if kind == _ListOfAddr:
        if not isinstance(value, list):
            raise ConfigError(f'{where}: expected a list of "host:port" strings, got {value!r}')
        return tuple(parse_listen(v, where) for v in value)
    if kind == _Workers:
        return _workers(value, where)
    if kind == _Path:
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
    if kind in (str, _Path):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if kind == _ListOfAddr or kind is list:
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
