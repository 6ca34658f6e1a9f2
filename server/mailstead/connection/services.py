"""What every IMAP and POP3 listener of one server shares: settings, admission, logins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..auth.policy import LoginPolicy
from ..shared import SharedCounters
from .limits import ConnectionGate

if TYPE_CHECKING:
    from ..auth.users import Authenticator
    from ..config import Config


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """The ``[limits]`` that apply to every connection, read once."""

    max_connections: int = 2000
    max_connections_per_ip: int = 50
    login_timeout: float = 60.0  # seconds from connect to a successful login
    tls_handshake_timeout: float = 20.0
    max_queued_input: int = 1024 * 1024  # octets read but not yet handled
    max_queued_commands: int = 256

    @classmethod
    def from_config(cls, config: Config) -> ConnectionSettings:
        limits = config.limits
        return cls(
            max_connections=limits.max_connections,
            max_connections_per_ip=limits.max_connections_per_ip,
            login_timeout=limits.login_timeout_seconds,
            tls_handshake_timeout=limits.tls_handshake_timeout_seconds,
            max_queued_input=limits.max_queued_input_bytes,
        )


class ConnectionServices:
    """Shared by every IMAP and POP3 listener of one server (``ServerContext.connections``)."""

    def __init__(self, settings: ConnectionSettings, logins: LoginPolicy) -> None:
        self.settings = settings
        self.gate = ConnectionGate(settings.max_connections, settings.max_connections_per_ip)
        self.logins = logins
        # In a worker process of several: the supervisor's counts of every worker's
        # connections, asked after the local gate (which alone applies to one process).
        self.shared: SharedCounters | None = None

    @classmethod
    def from_config(cls, config: Config, auth: Authenticator) -> ConnectionServices:
        return cls(ConnectionSettings.from_config(config), LoginPolicy.from_config(config, auth))
