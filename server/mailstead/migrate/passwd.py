"""Import users and password hashes from a Dovecot passwd-file.

Lines are ``user:{SCHEME}hash:uid:gid:gecos:home:shell:extra`` (only the first two fields
matter), ``user@domain:...`` for a domain this server serves, or ``user:hash`` with a bare
self-describing crypt hash. User names follow ``usernames.parse_user_name``, the rule of
``mailstead user add`` and of logins: ``bob@example.org`` is the user ``bob`` when
example.org is served (as Dovecot's ``auth_username_format = %n`` would read it), a foreign
domain or a name with ``/`` is refused. Blank lines and ``#`` comments are skipped.

Each scheme is dispatched to exactly one passlib handler, which must parse the hash and find
a checksum in it; nothing goes through a context that could hold ``plaintext``, and the
stored value is one that ``PasswordHasher.verify`` accepts, so a hash never verifies as its
own password:

=================  =====================  ==========================================
scheme             passlib handler        stored as
=================  =====================  ==========================================
{BLF-CRYPT}        bcrypt                 the hash (``$2a$``, ``$2b$``, ``$2y$``)
{SHA512-CRYPT}     sha512_crypt           the hash (``$6$``)
{SHA256-CRYPT}     sha256_crypt           the hash (``$5$``)
{ARGON2ID}         argon2                 the hash (``$argon2id$``)
{ARGON2I}          argon2                 the hash (``$argon2i$``)
{SSHA512}          ldap_salted_sha512     ``{SSHA512}`` + base64 (``.HEX`` converted)
{CRYPT}, bare      by the hash's prefix   one of the crypt rows above
{PLAIN} {CLEARTEXT} (none)                hashed now with the default scheme
=================  =====================  ==========================================

Everything but the default scheme is deprecated in the server's CryptContext, so each of
these is replaced by an argon2id hash at the user's next successful login. Other schemes
(MD5-CRYPT, SHA512 without salt, CRAM-MD5, ...) are refused: those users need a new password
(``mailstead user passwd``). Error lines name the file, line and user, never the hash.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from passlib import hash as passlib_hash

from ..usernames import UserNameError, parse_user_name, shown_name
from . import MigrateError
from .progress import Reporter

HANDLERS = {
    "BLF-CRYPT": "bcrypt",
    "SHA512-CRYPT": "sha512_crypt",
    "SHA256-CRYPT": "sha256_crypt",
    "ARGON2ID": "argon2",
    "ARGON2I": "argon2",
    "SSHA512": "ldap_salted_sha512",
}
# What a hash of each crypt-style scheme starts with.
PREFIXES = {
    "BLF-CRYPT": ("$2a$", "$2b$", "$2y$"),
    "SHA512-CRYPT": ("$6$",),
    "SHA256-CRYPT": ("$5$",),
    "ARGON2ID": ("$argon2id$",),
    "ARGON2I": ("$argon2i$",),
}
CLEARTEXT_SCHEMES = frozenset({"PLAIN", "CLEARTEXT"})
_SCHEME = re.compile(r"\{([A-Za-z0-9_-]+)(?:\.([A-Za-z0-9]+))?\}")


class LineError(ValueError):
    """Why one passwd-file line cannot be imported (never contains the secret)."""


@dataclass(frozen=True, slots=True)
class Entry:
    lineno: int
    name: str
    scheme: str
    stored: str | None  # the hash to store, or None for a cleartext line
    cleartext: str | None


def crypt_scheme(value: str) -> str | None:
    """The scheme of a self-describing crypt hash (bare or under ``{CRYPT}``)."""
    for scheme, prefixes in PREFIXES.items():
        if value.startswith(prefixes):
            return scheme
    return None


def stored_hash(scheme: str, value: str, encoding: str | None = None) -> str:
    """Validate ``value`` under ``scheme`` and return the string to store."""
    from ..auth.passwords import make_context

    handler_name = HANDLERS[scheme]
    handler = getattr(passlib_hash, handler_name)
    if scheme == "SSHA512":
        if encoding == "HEX":
            try:
                value = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            except ValueError:
                raise LineError("{SSHA512.HEX}: the value is not hexadecimal") from None
        elif encoding not in (None, "B64", "BASE64"):
            raise LineError(f"unknown encoding .{encoding} of {{SSHA512}}")
        else:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise LineError("{SSHA512}: the value is not base64") from None
        stored = "{SSHA512}" + value
    else:
        if encoding is not None:
            raise LineError(f"{{{scheme}}} has no .{encoding} encoding")
        if not value.startswith(PREFIXES[scheme]):
            want = " or ".join(PREFIXES[scheme])
            raise LineError(f"a {{{scheme}}} hash must start with {want}")
        stored = value
    try:
        if not handler.identify(stored):
            raise ValueError("not identified")
        parsed = handler.from_string(stored)
    except (ValueError, TypeError) as exc:
        detail = str(exc) if "salt" in str(exc) else "malformed"
        raise LineError(f"invalid {{{scheme}}} hash ({detail})") from None
    if not getattr(parsed, "checksum", None):
        raise LineError(f"invalid {{{scheme}}} hash (no checksum)")
    if make_context().identify(stored) != handler_name:  # pragma: no cover - defensive
        raise LineError(f"{{{scheme}}} hashes are not accepted by this server")
    return stored


def parse_line(lineno: int, line: str, domains: list[str]) -> Entry | None:
    """One passwd-file line → Entry (None for blank and comment lines)."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    name, colon, rest = line.partition(":")
    name = name.strip()
    if not colon:
        raise LineError("no ':' (expected user:{SCHEME}hash:...)")
    if not name:
        raise LineError("empty user name")
    # The rule ``mailstead user add`` and logins follow: name@served-domain means name.
    try:
        name = parse_user_name(name, domains)
    except UserNameError as exc:
        raise LineError(f"user {shown_name(name)}: {exc}") from None
    field = rest.split(":", 1)[0]
    if not field.strip():
        raise LineError(f"user {name}: empty password field")
    m = _SCHEME.match(field)
    if m is None:
        value = field.strip()
        scheme = crypt_scheme(value)
        if scheme is None:
            raise LineError(f"user {name}: no {{SCHEME}} prefix and not a recognised crypt "
                            "hash ($2y$, $2b$, $2a$, $6$, $5$, $argon2id$, $argon2i$)")
        try:
            return Entry(lineno, name, scheme, stored_hash(scheme, value), None)
        except LineError as exc:
            raise LineError(f"user {name}: {exc}") from None
    scheme = m[1].upper()
    encoding = m[2].upper() if m[2] else None
    value = field[m.end():]
    if scheme in CLEARTEXT_SCHEMES:
        if encoding in ("B64", "BASE64"):
            try:
                value = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise LineError(f"user {name}: {{{scheme}.{encoding}}} value is not "
                                "base64 of UTF-8 text") from None
        elif encoding == "HEX":
            try:
                value = bytes.fromhex(value).decode("utf-8")
            except ValueError:
                raise LineError(f"user {name}: {{{scheme}.HEX}} value is not hex of "
                                "UTF-8 text") from None
        elif encoding is not None:
            raise LineError(f"user {name}: unknown encoding .{encoding}")
        if not value:
            raise LineError(f"user {name}: empty password")
        if len(value) > 1024:
            raise LineError(f"user {name}: password longer than 1024 characters")
        return Entry(lineno, name, scheme, None, value)
    value = value.strip()
    if scheme == "CRYPT":
        crypt = crypt_scheme(value)
        if crypt is None:
            raise LineError(f"user {name}: {{CRYPT}} hash of an unsupported kind (supported: "
                            "$2y$, $2b$, $2a$, $6$, $5$, $argon2id$, $argon2i$)")
        scheme = crypt
    elif scheme not in HANDLERS:
        raise LineError(f"user {name}: unsupported password scheme {{{scheme}}}; set a new "
                        "password with 'mailstead user passwd'")
    try:
        return Entry(lineno, name, scheme, stored_hash(scheme, value, encoding), None)
    except LineError as exc:
        raise LineError(f"user {name}: {exc}") from None


@dataclass(slots=True)
class PasswdResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    hashed_cleartext: int = 0

    def summary(self, failed: int, scheme: str) -> list[str]:
        lines = [f"users: created {self.created}, updated {self.updated}, unchanged "
                 f"{self.unchanged}, {failed} failed"]
        if self.hashed_cleartext:
            lines.append(f"{self.hashed_cleartext} cleartext password(s) ({{PLAIN}}) were "
                         f"hashed with {scheme}; no password was stored in cleartext")
        return lines


def read_lines(path: str) -> list[bytes]:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise MigrateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return raw.split(b"\n")


async def import_passwd(
    store: Any, path: str, hasher: Any, domains: list[str], reporter: Reporter
) -> PasswdResult:
    from ..store.api import InvalidName

    result = PasswdResult()
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(read_lines(path), 1):
        where = f"{path}:{lineno}"
        try:
            line = raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            reporter.fail(where, "not UTF-8 text")
            continue
        try:
            entry = parse_line(lineno, line, domains)
        except LineError as exc:
            reporter.fail(where, str(exc))
            continue
        if entry is None:
            continue
        key = entry.name.lower()
        if key in seen:
            reporter.fail(where, f"user {entry.name}: already given on line {seen[key]}; "
                          "skipped")
            continue
        seen[key] = lineno
        user = await store.get_user(entry.name)
        if entry.cleartext is not None:
            if user is not None:
                ok, _ = await hasher.verify_async(entry.cleartext, user.password_hash)
                if ok:
                    result.unchanged += 1
                    continue
            stored = await hasher.hash_async(entry.cleartext)
        else:
            assert entry.stored is not None
            stored = entry.stored
        if user is None:
            try:
                await store.create_user(entry.name, stored)
            except InvalidName as exc:
                reporter.fail(where, str(exc))
                continue
            result.created += 1
            result.hashed_cleartext += entry.cleartext is not None
            reporter.note(f"created user {entry.name} ({entry.scheme})")
        elif user.password_hash == stored:
            result.unchanged += 1
        else:
            await store.set_password_hash(user.id, stored)
            result.updated += 1
            result.hashed_cleartext += entry.cleartext is not None
            reporter.note(f"updated the password of existing user {user.name} "
                          f"({entry.scheme})")
    return result
