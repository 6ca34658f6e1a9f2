"""Container health check: does Mailstead answer, and does its store?

Reads <data_dir>/listeners.json (written by the server once every listener is bound,
removed at a graceful stop). With a plain HTTP listener it asks ``/healthz``, which also
checks that the store answers and logs nothing. Without one it connects to the first IMAP
listener (else POP3, SMTP, LMTP; plain before TLS) and expects the protocol's greeting.
Exit status 0 = healthy, 1 = unhealthy (the reason on stdout, shown by `docker inspect`).

The config file is $MAILSTEAD_CONFIG (default /etc/mailstead/mailstead.toml) with the
same MAILSTEAD_* environment overrides the server sees.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT = 5.0
GREETING = {"imap": b"* OK", "pop3": b"+OK", "smtp": b"220", "lmtp": b"220"}
GOODBYE = {"imap": b"h LOGOUT\r\n", "pop3": b"QUIT\r\n", "smtp": b"QUIT\r\n", "lmtp": b"QUIT\r\n"}
CONNECT_TO = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def data_dir() -> Path:
    config = os.environ.get("MAILSTEAD_CONFIG", "/etc/mailstead/mailstead.toml")
    try:
        from mailstead.config import load_config

        return load_config(config).data_dir
    except Exception:
        return Path(os.environ.get("MAILSTEAD_SERVER__DATA_DIR", "/var/lib/mailstead"))


def pick(listeners: list[dict]) -> dict | None:
    for proto in GREETING:
        for tls in (False, True):
            for entry in listeners:
                if entry.get("protocol") == proto and bool(entry.get("tls")) == tls:
                    return entry
    return None


def check_http(entry: dict) -> str | None:
    host = CONNECT_TO.get(str(entry["host"]), str(entry["host"]))
    url = f"http://{f'[{host}]' if ':' in host else host}:{int(entry['port'])}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            body = resp.read(200)
    except urllib.error.HTTPError as exc:
        return f"{url}: {exc.code} {exc.read(200).decode(errors='replace').strip()}"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None if body.strip() == b"ok" else f"{url}: unexpected answer {body[:80]!r}"


def check() -> str | None:
    """None when healthy, else the reason."""
    path = data_dir() / "listeners.json"
    try:
        listeners = json.loads(path.read_text())
    except FileNotFoundError:
        return f"{path} does not exist: not started yet, or stopping"
    except (OSError, ValueError) as exc:
        return f"cannot read {path}: {exc}"
    for entry in listeners:
        if entry.get("protocol") == "http" and not entry.get("tls"):
            return check_http(entry)
    entry = pick(listeners)
    if entry is None:
        return f"no IMAP, POP3, SMTP or LMTP listener in {path}"
    proto, host, port = entry["protocol"], str(entry["host"]), int(entry["port"])
    host = CONNECT_TO.get(host, host)
    where = f"{proto}{' (TLS)' if entry.get('tls') else ''} on {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
            sock: socket.socket = raw
            if entry.get("tls"):
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(raw, server_hostname=None)
            line = sock.makefile("rb").readline(1024)
            if not line.startswith(GREETING[proto]):
                return f"{where}: unexpected greeting {line[:80]!r}"
            try:
                sock.sendall(GOODBYE[proto])
            except OSError:
                pass
    except OSError as exc:
        return f"{where}: {exc}"
    return None


def main() -> int:
    problem = check()
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
