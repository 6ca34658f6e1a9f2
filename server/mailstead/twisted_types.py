"""Static types for the Twisted transports the protocols call.

Twisted declares transports as zope interfaces (``ITransport``, ``ITLSTransport``,
``IConsumer``, ``IPushProducer``…). mypy reads an interface's methods as functions without
``self`` and cannot express "a TCP transport that is also a TLS transport, a consumer and a
producer", which is what a listener's connection is. ``StreamTransport`` says that
structurally; it costs nothing at run time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol


class StreamTransport(Protocol):
    """What a connected IMAP/POP3/HTTP protocol's transport does for us."""

    def write(self, data: bytes) -> None: ...

    def writeSequence(self, data: Iterable[bytes]) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    # An IAddress; IPv4Address and IPv6Address (every listener here is TCP) have host, port.
    def getPeer(self) -> Any: ...

    def registerProducer(self, producer: Any, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def startTLS(self, contextFactory: Any) -> None: ...
