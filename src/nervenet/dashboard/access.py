"""Who may change anything through the dashboard.

Without a token the dashboard is read-only: every action answers 403. With one, an operator
types it once into the page's form; the answer sets an ``HttpOnly``, ``SameSite=Strict`` cookie
holding it, compared in constant time on every action. Scripts may send
``Authorization: Bearer <token>`` instead. Actions are POSTs only, and a POST whose ``Origin``
(or ``Referer``) names another site is refused even with the cookie: ``SameSite`` already keeps
the cookie off cross-site requests, this also covers browsers that ignore it.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

COOKIE = "nervenet_token"


class Access:
    """The dashboard's action token and the checks that use it."""

    def __init__(self, token: str | None) -> None:
        if token is not None and len(token) < 16:
            raise ValueError("an action token must be 16 characters or more")
        self._token = token

    @property
    def read_only(self) -> bool:
        return self._token is None

    def matches(self, candidate: str) -> bool:
        return self._token is not None and hmac.compare_digest(
            candidate.encode(), self._token.encode()
        )

    def may_act(self, request: Request) -> bool:
        """The request carries the token (cookie or bearer header)."""
        if self._token is None:
            return False
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer ") and self.matches(header[7:]):
            return True
        return self.matches(request.cookies.get(COOKIE, ""))

    @staticmethod
    def same_origin(request: Request) -> bool:
        """A POST from a page of this dashboard (or from a client that sends no origin)."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin or origin == "null":
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")
