"""What every IMAP and POP3 listener of one server shares: settings, admission, logins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..auth.policy import LoginPolicy
from ..config import Config
from .limits import ConnectionGate

if TYPE_CHECKING:
    from ..context import ServerContext


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
        limits = config["limits"]
        return cls(
            max_connections=limits["max_connections"],
            max_connections_per_ip=limits["max_connections_per_ip"],
            login_timeout=float(limits["login_timeout_seconds"]),
            tls_handshake_timeout=float(limits["tls_handshake_timeout_seconds"]),
            max_queued_input=limits["max_queued_input_bytes"],
        )


class ConnectionServices:
    def __init__(self, settings: ConnectionSettings, logins: LoginPolicy) -> None:
        self.settings = settings
        self.gate = ConnectionGate(settings.max_connections, settings.max_connections_per_ip)
        self.logins = logins


_KEY = "connection_services"


def connection_services(ctx: ServerContext) -> ConnectionServices:
    """The server's one ``ConnectionServices``, made from its config on first use."""
    services = ctx.shared.get(_KEY)
    if services is None:
        services = ctx.shared[_KEY] = ConnectionServices(
            ConnectionSettings.from_config(ctx.config),
            LoginPolicy.from_config(ctx.config, ctx.auth),
        )
    assert isinstance(services, ConnectionServices)
    return services
