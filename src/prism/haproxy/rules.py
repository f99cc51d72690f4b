"""The per-app frontend rules that route a request to a color. Pure.

:mod:`prism.haproxy.render` places these lines into each frontend; this module decides
what they say. For one app, in HAProxy's evaluation order (every
``http-request`` rule runs before any ``use_backend`` rule, so the two kinds
are returned apart and the caller writes all requests first)::

    http-request return <maintenance page>    no color has a usable server
    http-request set-var(txn.prism_color)      pins, rule by rule: first hit wins
    http-request set-var(txn.prism_bucket)     rand, then the stickiness key's hash if sent
    http-request set-var(txn.prism_color)      bucket -> backend via the weights map
    use_backend <app>.%[X-Prism-Color]         smoke key + X-Prism-Color naming a color
    use_backend %[var(txn.prism_color)]        it names a color of the app with a usable server
    use_backend <app>.<stable>, then the other colors: the first with a usable server

Every request runs all of them, so each rule is written to cost little on the
common path: the smoke rule looks at one header and stops when it is absent
(the secret is compared only when a color header is there), and the chosen
color is checked and used by one dynamic ``use_backend`` (``nbsrv`` as a
converter reads the usable servers of the backend the variable names). The
per-color fallback lines run only when that rule did not match: a color
without a usable server, or no color chosen.

``txn.prism_color`` holds a backend name. The dynamic rules only ever name a
backend listed in their own condition, so a map value naming no backend of the
app (a runtime edit gone wrong) falls through to the stable color instead of
failing (HAProxy would send a request whose dynamic backend does not exist to
``default_backend``, skipping the fallback).

"Usable" is HAProxy's ``nbsrv``: servers that are UP (including "UP 1/3",
going down but not there yet) with a non-zero weight. DRAIN, MAINT, DOWN and
"DOWN 1/3" (rising, not yet at its rise count) servers do not count.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from prism import names
from prism.core.buckets import BUCKETS
from prism.core.model import App, PinRule, backend_name
from prism.errors import InvalidInput
from prism.haproxy.layout import HAProxyFiles
from prism.haproxy.tokens import check_path, check_word

__all__ = [
    "PAGES_DIR",
    "AppRules",
    "app_rules",
    "check_path",
    "check_pin_key",
    "check_word",
    "frontend_acls",
    "maintenance_body",
    "maintenance_file",
    "pin_map_name",
    "set_cookie_response",
]

PAGES_DIR = "pages"
"""Directory under the state root holding response bodies HAProxy serves from files."""

# An address pin key: an IPv4/IPv6 address or CIDR, no zone id ('%').
_ADDRESS_KEY = re.compile(r"[0-9A-Fa-f:.]{2,45}(?:/[0-9]{1,3})?", re.ASCII)

# Content types are a closed set in the model; the text ones carry their
# charset because the body is UTF-8 (JSON is UTF-8 by definition).
_CONTENT_TYPES = {
    "text/html": '"text/html; charset=utf-8"',
    "text/plain": '"text/plain; charset=utf-8"',
    "application/json": "application/json",
}
# HAProxy refuses a payload on these statuses ("No body expected").
_BODILESS = frozenset({204, 304})


def check_pin_key(rule: PinRule, key: object) -> str:
    """``key`` if it can be a key of ``rule``'s map; InvalidInput otherwise.

    Address rules take an IPv4/IPv6 address or CIDR (what ``map_ip`` matches);
    the others take a :data:`prism.names.PIN_KEY` token.
    """
    if rule.source != "address":
        return names.check(names.PIN_KEY, key, f"{rule.source} pin key")
    if isinstance(key, str) and _ADDRESS_KEY.fullmatch(key):
        try:
            ipaddress.ip_network(key, strict=False)
        except ValueError:
            pass
        else:
            return key
    raise InvalidInput(
        f"invalid address pin key {str(key)[:80]!r}",
        hint="use an IPv4 or IPv6 address or CIDR, e.g. 10.0.0.0/8 or 2001:db8::/32",
    )


def pin_map_name(app: str, rule: str) -> str:
    """File name, inside the maps directory, of one pin rule's map: key → backend."""
    return f"{app}.pins.{rule}.map"


def maintenance_file(app: str) -> str:
    """Path, relative to the state root, of the app's maintenance page body."""
    return f"{PAGES_DIR}/{app}.maintenance"


def maintenance_body(app: App) -> str | None:
    """The page body HAProxy must be able to read, or None if the status takes no body."""
    if app.maintenance.status in _BODILESS:
        return None
    return app.maintenance.body


@dataclass(frozen=True)
class AppRules:
    """One app's lines for a frontend, by the place each kind must go."""

    acls: list[str]
    requests: list[str]
    backends: list[str]
    sets_cookie: bool


def frontend_acls(smoke_key: str) -> list[str]:
    """The ACLs every app of a frontend shares."""
    return [
        # Named once per frontend so the secret appears once, not once per color.
        f"    acl prism_smoke_key req.hdr(x-prism-smoke-key) -m str {smoke_key}",
        "    acl prism_color_set var(txn.prism_color) -m found",
    ]


def set_cookie_response() -> str:
    """The frontend's one response rule; each app's request rules fill its value."""
    return (
        "    http-response add-header Set-Cookie %[var(txn.prism_set_cookie)]"
        " if { var(txn.prism_set_cookie) -m found }"
    )


_FIELD_NAMES = {
    "header": names.HEADER_NAME,
    "cookie": names.COOKIE_NAME,
    "query": names.QUERY_NAME,
}


def _field(source: str, name: object) -> str:
    """A header, cookie or query parameter name, checked against its own pattern.

    Narrower than a config token: no '%' (it may sit inside a log-format
    string) and nothing that could close a fetch's argument list.
    """
    return check_word(names.check(_FIELD_NAMES[source], name, f"{source} name"), "name")


def _if(*conditions: str) -> str:
    present = [c for c in conditions if c]
    return f" if {' '.join(present)}" if present else ""


def app_rules(app: App, paths: HAProxyFiles, host_acl: str) -> AppRules:
    """The routing lines of ``app``; ``host_acl`` names its Host ACL on a shared listener, or ''."""
    app_name = check_word(app.name, "app")
    colors = sorted(app.colors, key=lambda c: c.name)
    backend = {c.name: check_word(backend_name(app_name, c.name), "backend") for c in colors}
    usable = f"usable_{app_name}"
    # Several `acl` lines with one name are ORed: true while any color has a
    # usable server. "None usable" is then just `!usable_<app>`, instead of
    # up to 32 `{ nbsrv(..) eq 0 }` terms on the maintenance rule's line.
    acls = [f"    acl {usable} nbsrv({backend[c.name]}) gt 0" for c in colors]

    requests = _maintenance(app, paths, host_acl, usable)
    pins = _pins(app, paths, host_acl)
    requests += pins
    bucket, sets_cookie = _bucket(app, host_acl)
    requests += bucket
    weights = check_path(paths.weights_map(app_name), "weights map")
    requests.append(
        f"    http-request set-var(txn.prism_color) var(txn.prism_bucket),map_int({weights})"
        # Without pins nothing else sets the color, so there is nothing to test.
        + _if(host_acl, "!prism_color_set" if pins else "")
    )

    # use_backend rules run in order: smoke, then the chosen color, then fallback.
    names_ = " ".join(check_word(c.name, "color") for c in colors)
    # The last occurrence only, in the condition as in the name, so both see one value.
    smoke_color = "req.hdr(x-prism-color,-1)"
    backends = [
        f"    use_backend {app_name}.%[{smoke_color}]"
        + _if(host_acl, f"{{ {smoke_color} -m str {names_} }}", "prism_smoke_key")
    ]
    chosen = " ".join(backend[c.name] for c in colors)
    backends.append(
        "    use_backend %[var(txn.prism_color)]"
        + _if(
            host_acl,
            f"{{ var(txn.prism_color) -m str {chosen} }}",
            "{ var(txn.prism_color),nbsrv gt 0 }",
        )
    )
    fallback = [c.name for c in colors if c.name == app.stable]
    fallback += [c.name for c in colors if c.name != app.stable]
    backends += [
        f"    use_backend {backend[c]}" + _if(host_acl, f"{{ nbsrv({backend[c]}) gt 0 }}")
        for c in fallback
    ]
    return AppRules(acls=acls, requests=requests, backends=backends, sets_cookie=sets_cookie)


def _maintenance(app: App, paths: HAProxyFiles, host_acl: str, usable: str) -> list[str]:
    page = app.maintenance
    status = page.status
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise InvalidInput(f"refusing to render maintenance status {status!r}")
    # Smoke requests skip the page: a smoke test must see the color's own
    # failure, never a maintenance page that might answer 200.
    when = _if(host_acl, f"!{usable}", "!prism_smoke_key")
    body = maintenance_body(app)
    if body is None:
        return [f"    http-request return status {status}{when}"]
    if page.content_type not in _CONTENT_TYPES:
        raise InvalidInput(f"refusing to render content type {page.content_type[:40]!r}")
    path = check_path(paths.root / maintenance_file(check_word(app.name, "app")), "page")
    # HAProxy reads the file only when it loads the config, so a new body
    # needs a reload; its digest here makes the config text change with it.
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:16]
    return [
        f"    # maintenance page {maintenance_file(app.name)} sha256:{digest}",
        f"    http-request return status {status}"
        f" content-type {_CONTENT_TYPES[page.content_type]} file {path}{when}",
    ]


def _pins(app: App, paths: HAProxyFiles, host_acl: str) -> list[str]:
    lines: list[str] = []
    for rule in app.pins:
        path = check_path(paths.maps / pin_map_name(app.name, check_word(rule.name, "rule")), "pin")
        if rule.source == "address":
            lookup = f"src,map_ip({path})"
        else:
            fetch = {"header": "req.hdr", "cookie": "req.cook", "query": "url_param"}[rule.source]
            lookup = f"{fetch}({_field(rule.source, rule.key)}),map_str({path})"
        # A key missing from the map makes the lookup fail, which leaves the
        # variable unset for the next rule (and the weights) to fill.
        # The first pin of an app's own frontend runs before anything can set
        # the color; on a shared listener another app's rules might have.
        unset = "!prism_color_set" if lines or host_acl else ""
        lines.append(f"    http-request set-var(txn.prism_color) {lookup}" + _if(host_acl, unset))
    return lines


def _bucket(app: App, host_acl: str) -> tuple[list[str], bool]:
    """Lines setting ``txn.prism_bucket``, and whether they set a cookie."""
    sticky = app.stickiness
    if sticky.source == "none":
        return [
            f"    http-request set-var(txn.prism_bucket) rand({BUCKETS})" + _if(host_acl)
        ], False
    # 32-bit xxh32 only: xxh3/xxh64 are signed 64-bit and `mod` keeps the
    # sign, which would give negative buckets that match no map range.
    fetch = "req.cook" if sticky.source == "cookie" else "req.hdr"
    key = f"{fetch}({_field(sticky.source, sticky.name)})"
    # set-var leaves the variable as it was when its fetch fails (key absent),
    # so no rule needs to look the key up twice to know whether it was sent.
    hashed = f"    http-request set-var(txn.prism_bucket) {key},xxh32,mod({BUCKETS})" + _if(
        host_acl
    )
    if not sticky.set_cookie:
        return [
            f"    http-request set-var(txn.prism_bucket) rand({BUCKETS})" + _if(host_acl),
            hashed,
        ], False
    max_age = sticky.max_age_s
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0:
        raise InvalidInput(f"refusing to render cookie max-age {max_age!r}")
    cookie = (
        f'"{sticky.name}=%[var(txn.prism_uid)]; Path=/; Max-Age={max_age}; SameSite=Lax; HttpOnly"'
    )
    # A client without the cookie gets a fresh id now: it picks this
    # request's bucket, and the cookie makes every later request hash the same.
    unset = "!{ var(txn.prism_bucket) -m found }"
    fresh = "{ var(txn.prism_uid) -m found }"
    return [
        hashed,
        "    http-request set-var(txn.prism_uid) uuid" + _if(host_acl, unset),
        f"    http-request set-var(txn.prism_bucket) var(txn.prism_uid),xxh32,mod({BUCKETS})"
        + _if(host_acl, fresh),
        f"    http-request set-var-fmt(txn.prism_set_cookie) {cookie}" + _if(host_acl, fresh),
    ], True
