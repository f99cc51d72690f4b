"""The strict patterns every name and value must match before Prism uses it.

Anything Prism renders into haproxy.cfg or sends to the Runtime API passes one
of these checks first. Patterns are anchored with ``fullmatch`` and compiled
with ``re.ASCII`` so that no newline, ``;``, whitespace, backslash, NUL or
non-ASCII character can slip through (``$`` alone would accept a trailing
newline).
"""

from __future__ import annotations

import re

from prism.errors import InvalidInput

__all__ = [
    "ADDRESS",
    "CERT_PATH",
    "COOKIE_NAME",
    "HEADER_NAME",
    "HOSTNAME",
    "HTTP_PATH",
    "NAME",
    "PIN_KEY",
    "QUERY_NAME",
    "SERVER_NAME",
    "SRV_NAME",
    "TEXT",
    "VERSION_LABEL",
    "check",
]

#: apps, colors and listeners: ``blue``, ``shop``, ``web-2``
NAME = re.compile(r"[a-z][a-z0-9-]{0,31}", re.ASCII)
#: servers inside a color: ``s1``, ``web-01``, ``10.0.0.1_8080``
SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}", re.ASCII)
#: a DNS name for host matching
HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*",
    re.ASCII,
)
#: a DNS SRV record name: ``_service._proto.`` then a host name
#: (``_http._tcp.blue.shop.service.consul``, ``_web._tcp.shop.default.svc.cluster.local``)
SRV_NAME = re.compile(
    r"(?=.{1,253}\Z)_[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\._(?:tcp|udp)\."
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*",
    re.ASCII,
)
#: a server or bind host: IPv4 address or DNS name
ADDRESS = re.compile(
    r"(?:\d{1,3}(?:\.\d{1,3}){3})|(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)",
    re.ASCII,
)
#: a version label shown in status: ``v1.4.2``, ``2026-11-22+build.7``
VERSION_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", re.ASCII)
#: an HTTP path used in health and smoke checks
HTTP_PATH = re.compile(r"/[A-Za-z0-9._~/%?&=+-]{0,255}", re.ASCII)
#: an HTTP header name (RFC 9110 token, restricted)
HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}", re.ASCII)
#: a cookie name
COOKIE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}", re.ASCII)
#: a query parameter name
QUERY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", re.ASCII)
#: a pin key read from a header, cookie or query parameter (a tenant, a user id)
PIN_KEY = re.compile(r"[A-Za-z0-9_.:-][A-Za-z0-9_.:@-]{0,127}", re.ASCII)
#: a certificate file or directory of certificates on an HAProxy node: an absolute path
#: of safe characters, a directory ending in ``/`` (``..`` is refused separately)
CERT_PATH = re.compile(r"/[A-Za-z0-9._-][A-Za-z0-9._/-]{0,199}", re.ASCII)
#: free text that Prism itself compares against (never sent to HAProxy)
TEXT = re.compile(r"[\x20-\x7e]{1,256}", re.ASCII)


def check(pattern: re.Pattern[str], value: object, what: str) -> str:
    """Return ``value`` if it is a str fully matching ``pattern``; raise InvalidInput otherwise."""
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise InvalidInput(
            f"invalid {what}: {shown}",
            hint=f"a {what} must match {pattern.pattern}",
        )
    return value
