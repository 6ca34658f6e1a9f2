"""``mailstead check``: everything ``serve`` needs, short of binding the ports.

The configuration is read as ``serve`` reads it (types, ranges, host names, networks);
then the files and names it will use are tried: the data folder can be written, the
store opened at a schema this version knows, the certificate and key exist, load and
belong together, and every listen address resolves. Each problem is one line on stderr
and makes the exit status 1; a warning (a certificate about to expire, a privileged port)
is printed and does not.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sqlite3
import sys
import tempfile
from pathlib import Path

from .cli_common import load
from .config import Config

# A certificate expiring sooner than this is worth a warning.
EXPIRY_WARNING_DAYS = 14


class Findings:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []


def check_data_dir(cfg: Config, found: Findings) -> None:
    """Writable (a file can be created there), or creatable by its nearest parent."""
    folder = cfg.data_dir
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        found.problems.append(f"data_dir {folder}: {existing} is not a folder")
        return
    try:
        fd, name = tempfile.mkstemp(prefix=".mailstead-check-", dir=existing)
    except OSError as exc:
        what = "create the data folder in" if existing != folder else "write in the data folder"
        found.problems.append(f"data_dir {folder}: cannot {what} {existing}: {exc.strerror}")
        return
    os.close(fd)
    os.unlink(name)


def check_store(cfg: Config, found: Findings) -> None:
    """An existing database must be readable, at a schema version this server knows."""
    from .store.sqlite.schema import SCHEMA_VERSION

    db = cfg.db_path
    if not db.exists():
        return  # created at the first start
    if not os.access(db, os.R_OK | os.W_OK):
        found.problems.append(f"store {db}: not readable and writable by this user")
        return
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        found.problems.append(f"store {db}: cannot be read: {exc}")
        return
    if version > SCHEMA_VERSION:
        found.problems.append(
            f"store {db}: schema version {version} is newer than this server's "
            f"({SCHEMA_VERSION}); it was written by a newer Mailstead"
        )


def check_tls(cfg: Config, found: Findings) -> str:
    """The certificate as ``serve`` would load it; returns what the report says of it."""
    from .tls import TLSContexts, TLSError

    cert, key = cfg.tls_paths()
    configured = cfg.tls.cert is not None
    needed = cfg.needs_tls() or configured
    if not configured and not cert.exists() and not key.exists():
        return "generated at the first start (self-signed)"
    missing = [f"{what} {path}" for what, path in (("cert", cert), ("key", key))
               if not path.exists()]
    if missing:
        text = f"tls: {' and '.join(missing)} {'do' if len(missing) > 1 else 'does'} not exist"
        (found.problems if needed else found.warnings).append(
            text if needed else text + " (TLS stays off)"
        )
        return "missing"
    try:
        TLSContexts(cert, key)
    except TLSError as exc:
        (found.problems if needed else found.warnings).append(f"tls: {exc}")
        return "unusable"
    from cryptography import x509

    leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    expires = leaf.not_valid_after_utc
    left = expires - datetime.datetime.now(datetime.UTC)
    if left.total_seconds() <= 0:
        found.problems.append(f"tls: the certificate {cert} expired on {expires:%Y-%m-%d}")
    elif left.days < EXPIRY_WARNING_DAYS:
        found.warnings.append(f"tls: the certificate {cert} expires in {left.days} days")
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = [n.lower() for n in names.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns_names = []
    if not _covers(dns_names, cfg.hostname.lower()):
        found.warnings.append(
            f"tls: the certificate does not name the hostname {cfg.hostname} (it names "
            f"{', '.join(dns_names) or 'nothing'}): clients will refuse it"
        )
    return f"loads, expires {expires:%Y-%m-%d}"


def _covers(names: list[str], host: str) -> bool:
    for name in names:
        if name == host:
            return True
        if name.startswith("*.") and host.partition(".")[2] == name[2:]:
            return True
    return False


def _unprivileged_port_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


def check_listeners(cfg: Config, found: Findings) -> None:
    """Every address resolves to one the host can bind; no address:port given twice."""
    seen: dict[tuple[str, int], str] = {}
    low = _unprivileged_port_start()
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    for proto, _kind, addr in cfg.listeners():
        where = f"[{proto}] {addr}"
        try:
            socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
            found.problems.append(f"{where}: the address {addr.host!r} does not resolve "
                                  f"({reason})")
            continue
        if addr.port:
            key = (addr.host, addr.port)
            if key in seen:
                found.problems.append(f"{where}: also used by [{seen[key]}]; the second "
                                      "listener could not bind")
            seen.setdefault(key, proto)
            if addr.port < low and not root:
                found.warnings.append(
                    f"{where}: ports below {low} need root, CAP_NET_BIND_SERVICE or a socket "
                    "from systemd"
                )


def check_outbound(cfg: Config, found: Findings) -> list[str]:
    """Where outgoing mail goes, and the DKIM keys it is signed with (a key that cannot
    be read is a warning: mail is then sent unsigned, and the log says so)."""
    from .outbound.dkim import DkimError, load_key

    relay = cfg.relay
    lines = [f"outbound: relay {relay.host}:{relay.port} (tls {relay.tls})" if relay.host
             else f"outbound: each domain's MX, port {cfg.queue.mx_port}"]
    if relay.host and relay.tls != "none" and not relay.tls_verify:
        found.warnings.append("[relay] tls_verify = false: the smarthost is not authenticated")
    for path in sorted((cfg.data_dir / "dkim").glob("*/*.key")):
        try:
            key = load_key(path)
        except DkimError as exc:
            found.warnings.append(str(exc))
            continue
        lines.append(f"dkim: {path.parent.name} selector {key.selector} "
                     f"({key.algorithm.decode()})")
    return lines


def cmd_check(args: argparse.Namespace) -> int:
    cfg = load(args)
    found = Findings()
    check_data_dir(cfg, found)
    check_store(cfg, found)
    tls_state = check_tls(cfg, found)
    check_listeners(cfg, found)

    print(f"configuration: {cfg.path or '(defaults)'}")
    print(f"hostname: {cfg.hostname}")
    print(f"domains: {', '.join(cfg.domains)}")
    print(f"data_dir: {cfg.data_dir}")
    print(f"store: {cfg.store.backend} ({cfg.db_path})")
    cert, key = cfg.tls_paths()
    print(f"tls: cert {cert}, key {key}: {tls_state}")
    print("listeners:")
    for proto, kind, addr in cfg.listeners():
        print(f"  {proto:5} {'tls' if kind == 'tls' else 'plain':5} {addr}")
    for line in check_outbound(cfg, found):
        print(line)
    for text in found.warnings:
        print(f"warning: {text}")
    if found.problems:
        for text in found.problems:
            print(f"mailstead: {text}", file=sys.stderr)
        print(f"configuration NOT OK: {len(found.problems)} problem(s); serve would fail")
        return 1
    print("configuration OK")
    return 0
