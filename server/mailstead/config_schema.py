"""The configuration's schema: every section's keys with their types and defaults, and the
bounds and choices beyond a key's type. Data only; ``config`` reads files against it."""

from __future__ import annotations

from typing import Any

LISTEN_LIST = "listen"  # marker type: list of "host:port" strings
PATH_VALUE = "path"
WORKERS_VALUE = "workers"  # marker type: a positive integer or "auto"
MAX_WORKERS = 256

# section -> key -> (type, default). Types: bool, int, float, str, list (of str), LISTEN_LIST,
# PATH_VALUE, WORKERS_VALUE.
SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "server": {
        "hostname": (str, "localhost"),
        # Absolute, the FHS place for a service's state (the systemd unit's StateDirectory,
        # the image's volume): a relative default would follow the config file, and
        # /etc/mailstead/mailstead.toml would put mail in /etc. The repository's example
        # sets "../data" for scripts/run.
        "data_dir": (PATH_VALUE, "/var/lib/mailstead"),
        "domains": (list, ["localhost"]),
        "shutdown_grace": (int, 10),
        # Worker processes (N, or "auto" = one per core); above 1 a supervisor owns the
        # listeners and restarts workers (supervisor.py).
        "workers": (WORKERS_VALUE, 1),
    },
    "store": {
        "backend": (str, "sqlite"),
        "fsync": (bool, True),
    },
    "imap": {
        "listen": (LISTEN_LIST, ["127.0.0.1:1143"]),
        "listen_tls": (LISTEN_LIST, []),
        "autologout_minutes": (int, 30),
    },
    "pop3": {
        "listen": (LISTEN_LIST, ["127.0.0.1:1110"]),
        "listen_tls": (LISTEN_LIST, []),
        "idle_timeout_minutes": (int, 10),
        "retr_sets_seen": (bool, True),
        "expire": (str, "NEVER"),
        "login_delay": (int, 0),
    },
    "smtp": {
        "listen": (LISTEN_LIST, ["127.0.0.1:1025"]),
        "listen_tls": (LISTEN_LIST, []),
        "postmaster": (str, ""),
        # Inbound SPF/DKIM/DMARC on this listener (smtp/inbound_auth.py).
        "inbound_auth": (bool, True),
        "dmarc_reject": (bool, True),  # refuse a DMARC p=reject failure with 550 5.7.1
        "dmarc_quarantine": (str, "junk"),  # p=quarantine failure: "junk" or "inbox"
        "trusted_networks": (list, ["127.0.0.0/8", "::1"]),  # not evaluated
        "inbound_auth_seconds": (float, 10.0),  # DNS and checks per message, then temperror
    },
    "lmtp": {
        "listen": (LISTEN_LIST, ["127.0.0.1:1024"]),
    },
    # Mail submission (RFC 6409) for the server's own users: AUTH required, STARTTLS on
    # listen (587), implicit TLS on listen_tls (465, RFC 8314). None by default: a
    # server that only receives opens no submission port unless asked to.
    "submission": {
        "listen": (LISTEN_LIST, []),
        "listen_tls": (LISTEN_LIST, []),
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
        "listen": (LISTEN_LIST, []),
        "listen_tls": (LISTEN_LIST, []),
        # Who may read /metrics (addresses or networks); [] = nobody.
        "metrics_allow": (list, ["127.0.0.0/8", "::1"]),
        # What autoconfig, Autodiscover and the Apple profile advertise, when clients
        # reach the server under another name or other ports (NAT, Docker): "" and []
        # = [server] hostname and the listeners' own ports. Ports as "imaps:993".
        "public_hostname": (str, ""),
        "public_ports": (list, []),
    },
    "tls": {
        "cert": (PATH_VALUE, ""),
        "key": (PATH_VALUE, ""),
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
        "ca_file": (PATH_VALUE, ""),  # "" = the system's trusted CAs
        "username": (str, ""),
        "password": (str, ""),
    },
    "log": {
        "level": (str, "info"),
        "format": (str, "text"),
    },
}

CHOICES = {
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
RANGES: dict[tuple[str, str], tuple[int, int]] = {
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
POSITIVE = {
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
