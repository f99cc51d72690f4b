"""HAProxy's token grammar: what may stand inside one word Prism hands to HAProxy.

HAProxy's configuration parser splits lines into words on whitespace, starts
a comment at ``#``, and gives quotes, backslash and ``$`` meanings of their
own; its CLI also splits commands on ``;`` and newlines, reads a leading ``#``
as an entry reference and a leading ``@`` as a map version, and ends a ``<<``
payload at the first empty line. None of that can happen inside a word built
only from :data:`SAFE` and ``-``: letters, digits and ``. _ : / -``. Each place adds the
few characters it needs, and nothing else:

* :data:`WORD` — a config word: also ``% ? & = + ~`` (paths and queries of
  health checks);
* :data:`MAP_TOKEN` — a key or value in a map file: a word, or ``@`` (pin keys
  such as ``user@example``);
* :data:`MAP_KEY` — a map key or value on the Runtime API: never a leading
  ``@``, at most 256 characters;
* :data:`PROXY_NAME` / :data:`SERVER_NAME` — backends and servers, which may
  not hold ``/`` (it separates ``<backend>/<server>``);
* :data:`SAFE_PATH` — an absolute file path.

Every pattern is used with ``fullmatch`` and ``re.ASCII``: ``$`` alone would
accept a trailing newline.
"""

from __future__ import annotations

import re

from prism.errors import InvalidInput

__all__ = [
    "MAP_KEY",
    "MAP_TOKEN",
    "PROXY_NAME",
    "SAFE",
    "SAFE_PATH",
    "SERVER_NAME",
    "WORD",
    "check_path",
    "check_word",
]

#: characters with no meaning to HAProxy's config parser or CLI (and ``-``, which
#: ends every character class below so that it is never read as a range)
SAFE = "A-Za-z0-9._:/"
WORD = re.compile(rf"[{SAFE}%?&=+~-]+", re.ASCII)
MAP_TOKEN = re.compile(rf"[{SAFE}%?&=+~@-]+", re.ASCII)
MAP_KEY = re.compile(rf"[{SAFE}-][{SAFE}@-]{{0,255}}", re.ASCII)
PROXY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}", re.ASCII)
SERVER_NAME = PROXY_NAME
SAFE_PATH = re.compile(r"/[A-Za-z0-9._/-]{1,200}", re.ASCII)


def check_word(value: object, what: str) -> str:
    """``value`` if it is one safe config word; InvalidInput otherwise."""
    if not isinstance(value, str) or WORD.fullmatch(value) is None:
        raise InvalidInput(f"refusing to render {what} {str(value)[:80]!r} into haproxy.cfg")
    return value


def check_path(value: object, what: str) -> str:
    """``str(value)`` if it is a safe absolute path; InvalidInput otherwise."""
    text = str(value)
    if SAFE_PATH.fullmatch(text) is None:
        raise InvalidInput(f"refusing to render {what} path {text[:120]!r} into haproxy.cfg")
    return text
