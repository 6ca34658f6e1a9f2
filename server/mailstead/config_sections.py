"""The typed configuration ``load_config`` returns: one frozen dataclass per section.

Field for field the keys of ``config.SCHEMA`` (``config`` checks that at import), so code
reads ``cfg.limits.max_line_length``, typed, instead of looking up a nested dict. A key
added to ``SCHEMA`` gets its field here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Listen  # (annotations only: config imports this module)


@dataclass(frozen=True)
class ServerSection:
    hostname: str
    data_dir: Path
    domains: tuple[str, ...]
    shutdown_grace: int
    workers: int  # processes serving connections; "auto" is resolved to the core count


@dataclass(frozen=True)
class StoreSection:
    backend: str
    fsync: bool


@dataclass(frozen=True)
class ImapSection:
    listen: tuple[Listen, ...]
    listen_tls: tuple[Listen, ...]
    autologout_minutes: int


@dataclass(frozen=True)
class Pop3Section:
    listen: tuple[Listen, ...]
    listen_tls: tuple[Listen, ...]
    idle_timeout_minutes: int
    retr_sets_seen: bool
    expire: str
    login_delay: int


@dataclass(frozen=True)
class SmtpSection:
    listen: tuple[Listen, ...]
    listen_tls: tuple[Listen, ...]
    postmaster: str
    inbound_auth: bool
    dmarc_reject: bool
    dmarc_quarantine: str
    trusted_networks: tuple[str, ...]
    inbound_auth_seconds: float


@dataclass(frozen=True)
class LmtpSection:
    listen: tuple[Listen, ...]


@dataclass(frozen=True)
class SubmissionSection:
    listen: tuple[Listen, ...]
    listen_tls: tuple[Listen, ...]
    max_recipients: int
    max_messages_per_hour: int
    received_header: bool


@dataclass(frozen=True)
class DnsSection:
    nameservers: tuple[str, ...]
    port: int


@dataclass(frozen=True)
class HttpSection:
    listen: tuple[Listen, ...]
    listen_tls: tuple[Listen, ...]
    metrics_allow: tuple[str, ...]
    public_hostname: str
    public_ports: tuple[str, ...]


@dataclass(frozen=True)
class TlsSection:
    cert: Path | None  # None: not configured (defaults inside data_dir, see tls_paths)
    key: Path | None


@dataclass(frozen=True)
class AuthSection:
    plaintext_on_loopback: bool
    default_scheme: str
    failure_delay: float
    failure_delay_max: float
    failure_burst: int
    failure_block_seconds: int
    throttle_loopback: bool
    cache_ttl: int
    cache_size: int
    argon2_memory_kib: int
    argon2_time_cost: int
    argon2_parallelism: int
    login_queue_seconds: float
    max_failures_per_connection: int


@dataclass(frozen=True)
class LimitsSection:
    max_message_size: int
    max_line_length: int
    max_connections: int
    max_connections_per_ip: int
    max_sessions_per_user: int
    login_timeout_seconds: float
    tls_handshake_timeout_seconds: float
    max_queued_input_bytes: int
    max_logins_in_progress: int
    max_logins_queued: int
    max_mailboxes_per_user: int
    max_mailbox_depth: int
    max_store_bytes: int
    max_expensive_commands_per_user: int


@dataclass(frozen=True)
class QueueSection:
    retry_first: float
    retry_max: float
    queue_lifetime: float
    poll_seconds: float
    concurrency: int
    connect_timeout: float
    command_timeout: float
    mx_port: int


@dataclass(frozen=True)
class RelaySection:
    host: str
    port: int
    tls: str
    tls_verify: bool
    ca_file: Path | None
    username: str
    password: str


@dataclass(frozen=True)
class LogSection:
    level: str
    format: str


SECTIONS: dict[str, type] = {
    "server": ServerSection,
    "store": StoreSection,
    "imap": ImapSection,
    "pop3": Pop3Section,
    "smtp": SmtpSection,
    "lmtp": LmtpSection,
    "submission": SubmissionSection,
    "dns": DnsSection,
    "http": HttpSection,
    "tls": TlsSection,
    "auth": AuthSection,
    "limits": LimitsSection,
    "queue": QueueSection,
    "relay": RelaySection,
    "log": LogSection,
}


@dataclass(frozen=True)
class Config:
    """Validated configuration: one typed section per table, e.g. ``cfg.limits.max_line_length``."""

    server: ServerSection
    store: StoreSection
    imap: ImapSection
    pop3: Pop3Section
    smtp: SmtpSection
    lmtp: LmtpSection
    submission: SubmissionSection
    dns: DnsSection
    http: HttpSection
    tls: TlsSection
    auth: AuthSection
    limits: LimitsSection
    queue: QueueSection
    relay: RelaySection
    log: LogSection
    path: Path | None = None  # the file read; None when built from defaults

    # Convenience accessors for the things most modules need.
    @property
    def hostname(self) -> str:
        return self.server.hostname

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def domains(self) -> tuple[str, ...]:
        return self.server.domains

    @property
    def db_path(self) -> Path:
        return self.data_dir / "mailstead.sqlite3"

    def tls_paths(self) -> tuple[Path, Path]:
        """Certificate and key; defaults inside the data folder when not configured."""
        cert = self.tls.cert or self.data_dir / "tls" / "cert.pem"
        key = self.tls.key or self.data_dir / "tls" / "key.pem"
        return cert, key

    def listeners(self) -> list[tuple[str, str, Listen]]:
        """(protocol, kind, address) for every configured listener."""
        out: list[tuple[str, str, Listen]] = []
        for proto, plain, tls in (
            ("imap", self.imap.listen, self.imap.listen_tls),
            ("pop3", self.pop3.listen, self.pop3.listen_tls),
            ("smtp", self.smtp.listen, self.smtp.listen_tls),
            ("lmtp", self.lmtp.listen, ()),
            ("submission", self.submission.listen, self.submission.listen_tls),
            ("http", self.http.listen, self.http.listen_tls),
        ):
            out += [(proto, "plain", addr) for addr in plain]
            out += [(proto, "tls", addr) for addr in tls]
        return out

    def needs_tls(self) -> bool:
        return any(kind == "tls" for _, kind, _ in self.listeners())
