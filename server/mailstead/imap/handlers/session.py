"""Session commands: CAPABILITY, NOOP, LOGOUT, ID, ENABLE, NAMESPACE, IDLE."""

from __future__ import annotations

from ... import __version__
from ...eventlog import Event
from ..response import Result, bad, ok
from ..session_api import Session
from ..syntax.session import Capability, Enable, Id, Idle, Logout, Namespace, Noop


async def handle_capability(s: Session, cmd: Capability) -> Result:
    s.send(b"* CAPABILITY " + " ".join(s.capabilities()).encode())
    return ok("Capability completed")


async def handle_noop(s: Session, cmd: Noop) -> Result:
    return ok("NOOP completed")


async def handle_logout(s: Session, cmd: Logout) -> Result | None:
    s.events.emit(Event.LOGOUT)
    s.send(b"* BYE Logging out")
    s.out.write(ok("Logout completed").line(cmd.tag))
    s.close()
    return None


async def handle_id(s: Session, cmd: Id) -> Result:
    s.send(b'* ID ("name" "Mailstead" "version" "' + __version__.encode() + b'")')
    return ok("ID completed")


async def handle_enable(s: Session, cmd: Enable) -> Result:
    enabled = []
    for cap in cmd.capabilities:
        if cap.upper() == "CONDSTORE" and not s.condstore:
            s.condstore = True
            if s.selected is not None:
                s.selected.condstore = True
            enabled.append("CONDSTORE")
    s.send(b"* ENABLED" + b"".join(b" " + e.encode() for e in enabled))
    return ok("ENABLE completed")


async def handle_namespace(s: Session, cmd: Namespace) -> Result:
    s.send(b'* NAMESPACE (("" "/")) NIL NIL')
    return ok("NAMESPACE completed")


async def handle_idle(s: Session, cmd: Idle) -> Result:
    s.out.write(b"+ idling\r\n")
    s.idling = True
    try:
        await s.send_updates(allow_expunge=True)
        await s.out.drain()
        line = await s.read_line()
    finally:
        s.idling = False
    if line.data.rstrip(b"\r\n").upper() != b"DONE":
        return bad("Expected DONE to end IDLE")
    return ok("IDLE terminated")
