"""Which users an address reaches: the one rule of inbound delivery and of the sender
check of submission ("an address is yours when mail to it reaches you").

An address is local when its domain is one of ``[server] domains`` or the host name.
Its local part, after any ``+tag``, names in this order: a user of that name; an alias
of exactly that address (``mailstead alias add``); the domain's catch-all alias
(``@domain``); for ``postmaster``, the postmaster rule of ``delivery``. Store access goes
through the ``MailStore`` API only.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable

from ..store.api import MailStore, User
from ..usernames import resolve_user_name

log = logging.getLogger(__name__)


class Unknown(enum.Enum):
    FOREIGN = "foreign domain"  # not ours: a relay for inbound SMTP, remote for submission
    NO_SUCH_USER = "no such user"  # ours, but nobody receives it


class AddressBook:
    def __init__(
        self, store: MailStore, *, hostname: str, domains: Iterable[str], postmaster: str = ""
    ) -> None:
        self.store = store
        self.domains = [d.lower() for d in domains]
        self.local_domains = frozenset([*self.domains, hostname.lower()])
        self.postmaster = postmaster

    def is_local(self, address: str) -> bool:
        _, at, domain = address.rpartition("@")
        if not at:
            return address.lower() == "postmaster"
        return domain.lower() in self.local_domains

    async def users_for(self, address: str) -> list[User] | Unknown:
        """The users mail to ``address`` reaches (several for an alias), or why none.

        Raises ``StoreError`` when the store cannot answer.
        """
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, ""
            if local.lower() != "postmaster":  # the one address allowed without a domain
                return Unknown.FOREIGN
        elif domain.lower() not in self.local_domains:
            return Unknown.FOREIGN
        base = local.split("+", 1)[0]
        # The user-name rule of logins and ``user add`` (usernames.py), after the tag.
        user_name = resolve_user_name(base, ())
        if not user_name:
            return Unknown.NO_SUCH_USER
        user = await self.store.get_user(user_name)
        if user is not None:
            return [user]
        if domain:
            domain = domain.lower()
            users = await self.store.alias_users(f"{user_name.lower()}@{domain}")
            if not users:
                users = await self.store.alias_users(f"@{domain}")
            if users:
                return users
        if user_name.lower() == "postmaster":
            found = await self._postmaster()
            if found is not None:
                return [found]
        return Unknown.NO_SUCH_USER

    async def owns(self, user: User, address: str) -> bool:
        """Whether ``address`` is ``user``'s: mail to it reaches them."""
        found = await self.users_for(address)
        return not isinstance(found, Unknown) and any(u.id == user.id for u in found)

    async def _postmaster(self) -> User | None:
        """Who reads postmaster mail when no user is called so (see ``delivery``)."""
        if self.postmaster:
            user = await self.store.get_user(self.postmaster)
            if user is not None:
                return user
            log.warning("[smtp] postmaster %r is no user: postmaster mail goes to the "
                        "first user", self.postmaster)
        users = await self.store.list_users()
        return min(users, key=lambda u: u.id) if users else None
