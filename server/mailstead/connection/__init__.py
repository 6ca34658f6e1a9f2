"""The connection layer IMAP and POP3 share (the part of Dovecot's login-common that is not
the protocol): admission (a global cap and one per address), output with back-pressure and
a close that works over TLS, input back-pressure, TLS handshake and login deadlines, idle
timers. The login policy itself is ``auth.policy``.

* ``protocol.py`` — ``ConnectionProtocol``, the base of ``IMAPProtocol`` and ``POP3Protocol``
* ``output.py`` — ``TransportOutput`` (the registered streaming producer) and ``set_nodelay``
* ``input.py`` — ``InputBudget``: queued commands and octets per connection, pause/resume
* ``limits.py`` — ``ConnectionGate`` and ``ConnectionLimiter``
* ``timers.py`` — ``ActivityTimer``
* ``services.py`` — ``ConnectionSettings`` and ``ConnectionServices`` (one per server:
  ``ServerContext.connections``)
"""

from .input import InputBudget
from .limits import ConnectionGate, ConnectionLimiter, Refusal
from .output import GOODBYE_GRACE, TransportOutput, set_nodelay
from .protocol import ConnectionProtocol
from .services import ConnectionServices, ConnectionSettings
from .timers import ActivityTimer

__all__ = [
    "GOODBYE_GRACE",
    "ActivityTimer",
    "ConnectionGate",
    "ConnectionLimiter",
    "ConnectionProtocol",
    "ConnectionServices",
    "ConnectionSettings",
    "InputBudget",
    "Refusal",
    "TransportOutput",
    "set_nodelay",
]
