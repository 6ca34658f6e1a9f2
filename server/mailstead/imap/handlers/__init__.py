"""Command handlers, one module per command family, and the one table that routes to them.

A handler is ``async def handle_x(session, command) -> Result | None`` written against
:class:`~..session_api.Session`; it returns its tagged result, or None when it already
answered (LOGOUT, STARTTLS). :data:`HANDLERS` maps each command type (from
``imap/syntax/``) to its handler and the states in which it may run. Importing this
package registers nothing anywhere: ``session.py`` reads the table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..response import Result
from ..session_api import ANY_STATE, AUTHENTICATED, NOT_AUTHENTICATED, SELECTED, Session, State
from ..syntax import auth as auth_syntax
from ..syntax import fetch as fetch_syntax
from ..syntax import mailbox as mailbox_syntax
from ..syntax import message as message_syntax
from ..syntax import search as search_syntax
from ..syntax import session as session_syntax
from ..syntax import store as store_syntax
from ..syntax.tokens import Command
from . import auth, fetch, mailbox, message, search, session, store

Handler = Callable[[Session, Any], Awaitable[Result | None]]

HANDLERS: dict[type[Command], tuple[Handler, frozenset[State]]] = {
    # handlers/session.py
    session_syntax.Capability: (session.handle_capability, ANY_STATE),
    session_syntax.Noop: (session.handle_noop, ANY_STATE),
    session_syntax.Logout: (session.handle_logout, ANY_STATE),
    session_syntax.Id: (session.handle_id, ANY_STATE),
    session_syntax.Enable: (session.handle_enable, AUTHENTICATED),
    session_syntax.Namespace: (session.handle_namespace, AUTHENTICATED),
    session_syntax.Idle: (session.handle_idle, AUTHENTICATED),
    # handlers/auth.py
    auth_syntax.StartTLS: (auth.handle_starttls, NOT_AUTHENTICATED),
    auth_syntax.Login: (auth.handle_login, NOT_AUTHENTICATED),
    auth_syntax.Authenticate: (auth.handle_authenticate, NOT_AUTHENTICATED),
    # handlers/mailbox.py
    mailbox_syntax.Select: (mailbox.handle_select, AUTHENTICATED),
    mailbox_syntax.Create: (mailbox.handle_create, AUTHENTICATED),
    mailbox_syntax.Delete: (mailbox.handle_delete, AUTHENTICATED),
    mailbox_syntax.Rename: (mailbox.handle_rename, AUTHENTICATED),
    mailbox_syntax.Subscribe: (mailbox.handle_subscribe, AUTHENTICATED),
    mailbox_syntax.Unsubscribe: (mailbox.handle_unsubscribe, AUTHENTICATED),
    mailbox_syntax.List: (mailbox.handle_list, AUTHENTICATED),
    mailbox_syntax.Status: (mailbox.handle_status, AUTHENTICATED),
    # handlers/message.py
    message_syntax.Append: (message.handle_append, AUTHENTICATED),
    message_syntax.Check: (message.handle_check, SELECTED),
    message_syntax.Close: (message.handle_close, SELECTED),
    message_syntax.Unselect: (message.handle_unselect, SELECTED),
    message_syntax.Expunge: (message.handle_expunge, SELECTED),
    message_syntax.Copy: (message.handle_copy, SELECTED),
    message_syntax.Move: (message.handle_move, SELECTED),
    # handlers/fetch.py, handlers/search.py, handlers/store.py
    fetch_syntax.Fetch: (fetch.handle_fetch, SELECTED),
    search_syntax.Search: (search.handle_search, SELECTED),
    store_syntax.Store: (store.handle_store, SELECTED),
}

__all__ = ["HANDLERS", "Handler"]
