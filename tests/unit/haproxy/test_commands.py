"""The Runtime API command builders: exact text, and no way to inject anything."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prism.errors import InvalidInput, UnsafeArgument
from prism.haproxy import commands as cmd

MAP = "/var/lib/prism/maps/shop.weights.map"

HOSTILE = [
    "",
    "a\nb",
    "a\rb",
    "a;b",
    "a b",
    "a\tb",
    "a\\b",
    "a\x00b",
    "<<",
    "a<<",
    "café",
    "x" * 257,
    "a\n",
    "\n",
    "a\x0bb",
]


@pytest.mark.parametrize(
    ("command", "text"),
    [
        (cmd.show_info(), "show info"),
        (cmd.show_stat(), "show stat"),
        (cmd.show_stat("shop.blue"), "show stat shop.blue -1 -1"),
        (cmd.show_servers_state(), "show servers state"),
        (cmd.show_servers_state("shop.blue"), "show servers state shop.blue"),
        (cmd.show_servers_conn(), "show servers conn"),
        (cmd.show_servers_conn("shop.blue"), "show servers conn shop.blue"),
        (cmd.show_map(MAP), f"show map {MAP}"),
        (cmd.set_map(MAP, "0:99", "shop.blue"), f"set map {MAP} 0:99 shop.blue"),
        (cmd.add_map(MAP, "10.0.0.0/8", "green"), f"add map {MAP} 10.0.0.0/8 green"),
        (cmd.add_map(MAP, "tenant@acme", "red"), f"add map {MAP} tenant@acme red"),
        (cmd.del_map(MAP, "acme"), f"del map {MAP} acme"),
        (cmd.clear_map(MAP), f"clear map {MAP}"),
        (cmd.prepare_map(MAP), f"prepare map {MAP}"),
        (cmd.commit_map(MAP, 7), f"commit map @7 {MAP}"),
        (
            cmd.add_server("shop.blue", "s1", "10.0.0.5", 8080, inter_ms=500, rise=3, fall=2),
            "add server shop.blue/s1 10.0.0.5:8080 check inter 500ms rise 3 fall 2",
        ),
        (
            cmd.add_server("shop.blue", "web-01", "web.internal", 80, check=False, weight=10),
            "add server shop.blue/web-01 web.internal:80 weight 10",
        ),
        (
            cmd.add_server(
                "shop.blue",
                "s2",
                "10.0.0.6",
                80,
                tuning=cmd.ServerTuning(slowstart_ms=5000, observe="layer7", error_limit=5),
            ),
            "add server shop.blue/s2 10.0.0.6:80 check inter 1000ms rise 2 fall 3 weight 100"
            " slowstart 5000ms observe layer7 error-limit 5 on-error mark-down",
        ),
        (cmd.set_server_state("shop.blue", "s1", "drain"), "set server shop.blue/s1 state drain"),
        (cmd.enable_health("shop.blue", "s1"), "enable health shop.blue/s1"),
        (cmd.del_server("shop.blue", "s1"), "del server shop.blue/s1"),
        (cmd.set_server_weight("shop.blue", "s1", 0), "set server shop.blue/s1 weight 0"),
    ],
)
def test_builders_produce_exact_text(command: cmd.Command, text: str) -> None:
    """Each builder renders the documented HAProxy 2.8 syntax, nothing more."""
    assert command.text == text


def test_payload_text_ends_with_a_newline_so_the_transport_newline_ends_it() -> None:
    """A payload is the head line, one line per entry, and a final newline."""
    command = cmd.add_map_payload(MAP, 3, [("0:49", "shop.blue"), ("50:99", "shop.green")])
    assert command.text == f"add map @3 {MAP} <<\n0:49 shop.blue\n50:99 shop.green\n"
    assert "\n\n" not in command.text
    assert command.summary == f"add map @3 {MAP} <<"


def test_empty_payload_is_refused() -> None:
    """An empty payload would leave HAProxy waiting; it is never built."""
    with pytest.raises(UnsafeArgument, match="a map payload needs at least one entry"):
        cmd.add_map_payload(MAP, 3, [])


def test_payloads_are_split_to_fit_the_limit_and_keep_order() -> None:
    """Chunked payloads each fit the limit and together hold every entry in order."""
    entries = [(f"{i}:{i}", f"shop.c{i % 7}") for i in range(3000)]
    commands = cmd.add_map_payloads(MAP, 9, entries, limit=2000)
    assert len(commands) > 1
    lines: list[str] = []
    for command in commands:
        assert len(command.text) + 1 <= 2000
        head, *body = command.text.split("\n")
        assert head == f"add map @9 {MAP} <<"
        assert body[-1] == ""
        assert "" not in body[:-1]
        lines.extend(body[:-1])
    assert lines == [f"{k} {v}" for k, v in entries]


def test_no_entries_give_no_payloads() -> None:
    """Replacing a map by nothing needs no payload at all."""
    assert cmd.add_map_payloads(MAP, 1, []) == []


@pytest.mark.parametrize("bad", HOSTILE)
def test_a_hostile_entry_anywhere_rejects_every_payload(bad: str) -> None:
    """One bad key or value among thousands means no command is built."""
    entries = [(f"{i}:{i}", "shop.blue") for i in range(2000)]
    with pytest.raises(UnsafeArgument, match=r"^unsafe map key for the Runtime API: "):
        cmd.add_map_payloads(MAP, 1, [*entries, (bad, "shop.blue")])
    with pytest.raises(UnsafeArgument, match=r"^unsafe map value for the Runtime API: "):
        cmd.add_map_payloads(MAP, 1, [*entries[:5], ("5:5", bad), *entries[5:]])


BUILDERS_BY_ARGUMENT: dict[str, Callable[[str], cmd.Command]] = {
    "backend (state)": lambda v: cmd.show_servers_state(v),
    "backend (conn)": lambda v: cmd.show_servers_conn(v),
    "map path": lambda v: cmd.show_map(v),
    "map key": lambda v: cmd.set_map(MAP, v, "shop.blue"),
    "map value": lambda v: cmd.add_map(MAP, "0:99", v),
    "del key": lambda v: cmd.del_map(MAP, v),
    "prepare path": lambda v: cmd.prepare_map(v),
    "payload path": lambda v: cmd.add_map_payload(v, 1, [("a", "b")]),
    "server backend": lambda v: cmd.add_server(v, "s1", "10.0.0.1", 80),
    "server name": lambda v: cmd.add_server("shop.blue", v, "10.0.0.1", 80),
    "server address": lambda v: cmd.add_server("shop.blue", "s1", v, 80),
    "state server": lambda v: cmd.set_server_state("shop.blue", v, "ready"),
    "health server": lambda v: cmd.enable_health(v, "s1"),
    "del server": lambda v: cmd.del_server("shop.blue", v),
    "weight server": lambda v: cmd.set_server_weight(v, "s1", 1),
}

#: The argument each builder above checks, as its error message names it.
ARGUMENT_KIND: dict[str, str] = {
    "backend (state)": "backend name",
    "backend (conn)": "backend name",
    "map path": "map path",
    "map key": "map key",
    "map value": "map value",
    "del key": "map key",
    "prepare path": "map path",
    "payload path": "map path",
    "server backend": "backend name",
    "server name": "server name",
    "server address": "server address",
    "state server": "server name",
    "health server": "backend name",
    "del server": "server name",
    "weight server": "backend name",
}


@pytest.mark.parametrize("argument", sorted(BUILDERS_BY_ARGUMENT))
@pytest.mark.parametrize("bad", HOSTILE)
def test_every_argument_rejects_hostile_text(argument: str, bad: str) -> None:
    """Newlines, ;, whitespace, backslash, NUL, non-ASCII, empty and long values all raise."""
    kind = ARGUMENT_KIND[argument]
    with pytest.raises(UnsafeArgument, match=f"^unsafe {kind} for the Runtime API: ") as caught:
        BUILDERS_BY_ARGUMENT[argument](bad)
    assert isinstance(caught.value, InvalidInput)


@pytest.mark.parametrize("bad", ["#1", "@1", "#0x55d0c0"])
def test_keys_cannot_look_like_references_or_versions(bad: str) -> None:
    """A key starting with # or @ would be read as an entry reference or a version."""
    with pytest.raises(UnsafeArgument, match=f"^unsafe map key for the Runtime API: '{bad}' "):
        cmd.del_map(MAP, bad)


@pytest.mark.parametrize("bad", ["relative/path.map", "/a b.map", "/a;b", "#5", "/" + "a" * 256])
def test_map_paths_must_be_safe_absolute_paths(bad: str) -> None:
    """Map paths are absolute and use only letters, digits and . _ / -."""
    with pytest.raises(UnsafeArgument, match=r"^unsafe map path for the Runtime API: "):
        cmd.clear_map(bad)


@pytest.mark.parametrize("bad", [None, 1, b"shop", ["shop"]])
def test_non_strings_are_rejected(bad: object) -> None:
    """Only str arguments are accepted; bytes, numbers and None are refused."""
    pattern = f"^unsafe map path for the Runtime API: {re.escape(repr(bad))} "
    with pytest.raises(UnsafeArgument, match=pattern):
        cmd.show_map(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "why"),
    [
        (lambda: cmd.add_server("shop.blue", "s1", "10.0.0.1", 0), "unsafe port .*: 0 "),
        (lambda: cmd.add_server("shop.blue", "s1", "10.0.0.1", 65536), "unsafe port .*: 65536 "),
        (lambda: cmd.add_server("shop.blue", "s1", "10.0.0.1", True), "unsafe port .*: True "),
        (
            lambda: cmd.add_server("shop.blue", "s1", "10.0.0.1", "80"),  # type: ignore[arg-type]
            "unsafe port .*: '80' ",
        ),
        (
            lambda: cmd.add_server("shop.blue", "s1", "10.0.0.1", 80, inter_ms=0),
            r"unsafe check interval \(ms\) .*: 0 ",
        ),
        (
            lambda: cmd.add_server("shop.blue", "s1", "10.0.0.1", 80, rise=0),
            "unsafe rise count .*: 0 ",
        ),
        (
            lambda: cmd.add_server("shop.blue", "s1", "10.0.0.1", 80, weight=257),
            "unsafe server weight .*: 257 ",
        ),
        (
            lambda: cmd.add_server("shop.blue", "s1", "999.0.0.1", 80),
            r"invalid IPv4 address .*: '999\.0\.0\.1' ",
        ),
        (lambda: cmd.set_server_weight("shop.blue", "s1", -1), "unsafe server weight .*: -1 "),
        (
            lambda: cmd.set_server_weight("shop.blue", "s1", 256.0),  # type: ignore[arg-type]
            r"unsafe server weight .*: 256\.0 ",
        ),
        (
            lambda: cmd.ServerTuning(weight=300).words(),
            "unsafe server weight .*: 300 ",
        ),
        (
            lambda: cmd.ServerTuning(slowstart_ms=-1).words(),
            r"unsafe slowstart \(ms\) .*: -1 ",
        ),
        (
            lambda: cmd.ServerTuning(observe="layer7", error_limit=0).words(),
            "unsafe error limit .*: 0 ",
        ),
        (
            lambda: cmd.ServerTuning(observe="layer7 check", error_limit=3).words(),  # type: ignore[arg-type]
            "unsafe observe mode: 'layer7 check'",
        ),
        (
            lambda: cmd.ServerTuning(observe="layer7", on_error="mark-down;x").words(),  # type: ignore[arg-type]
            "unsafe on-error action: 'mark-down;x'",
        ),
        (
            lambda: cmd.add_server(
                "shop.blue", "s1", "10.0.0.1", 80, weight=5, tuning=cmd.ServerTuning()
            ),
            "give the weight of a tuned server in its tuning",
        ),
        (lambda: cmd.commit_map(MAP, -1), "unsafe map version .*: -1 "),
        (lambda: cmd.commit_map(MAP, 2**32), "unsafe map version .*: 4294967296 "),
        (lambda: cmd.commit_map(MAP, False), "unsafe map version .*: False "),
        (
            lambda: cmd.set_server_state("shop.blue", "s1", "up"),  # type: ignore[arg-type]
            "unsafe server state .*: 'up' ",
        ),
        (
            lambda: cmd.set_server_state("shop.blue", "s1", "ready;clear map x"),  # type: ignore[arg-type]
            "unsafe server state .*: 'ready;clear map x' ",
        ),
    ],
)
def test_numbers_and_states_are_range_checked(build: Callable[[], cmd.Command], why: str) -> None:
    """Ports, weights, timings, versions and states outside their range raise."""
    with pytest.raises(UnsafeArgument, match=f"^{why}"):
        build()


def test_backend_names_cannot_contain_a_slash() -> None:
    """``/`` separates backend and server, so it is refused inside either name."""
    pattern = "unsafe backend name for the Runtime API: 'shop/blue'"
    with pytest.raises(UnsafeArgument, match=pattern):
        cmd.del_server("shop/blue", "s1")
    with pytest.raises(UnsafeArgument, match="unsafe server name for the Runtime API: 's/1'"):
        cmd.del_server("shop.blue", "s/1")


@given(key=st.text(max_size=300), value=st.text(max_size=300))
def test_any_text_either_raises_or_stays_one_clean_line(key: str, value: str) -> None:
    """Whatever text comes in, a built command is one printable-ASCII line of 5 words."""
    try:
        command = cmd.set_map(MAP, key, value)
    except UnsafeArgument:
        return
    assert command.text.split(" ") == ["set", "map", MAP, key, value]
    assert all(0x21 <= ord(c) <= 0x7E or c == " " for c in command.text)
    assert ";" not in command.text
    assert "\\" not in command.text


# -- certificates ------------------------------------------------------------


def test_set_ssl_cert_carries_the_pem_as_a_payload() -> None:
    """One payload line per PEM line; the transport's newline ends it."""
    pem = "-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n"
    command = cmd.set_ssl_cert("/etc/prism/shop.pem", pem)
    assert command.text == "set ssl cert /etc/prism/shop.pem <<\n" + pem
    assert command.summary == "set ssl cert /etc/prism/shop.pem <<"
    assert cmd.commit_ssl_cert("/etc/prism/shop.pem").text == "commit ssl cert /etc/prism/shop.pem"
    assert cmd.abort_ssl_cert("/etc/prism/shop.pem").text == "abort ssl cert /etc/prism/shop.pem"
    assert cmd.show_ssl_cert().text == "show ssl cert"


@pytest.mark.parametrize(
    "pem",
    [
        "-----BEGIN CERTIFICATE-----\n\nshow info\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nQUJD;shutdown sessions\n-----END CERTIFICATE-----\n",
        "",
        "A" * 20_000,
    ],
)
def test_set_ssl_cert_refuses_a_payload_that_is_not_pem_lines(pem: str) -> None:
    """An empty line would end the payload early and run the rest as commands."""
    with pytest.raises(UnsafeArgument, match="certificate payload"):
        cmd.set_ssl_cert("/etc/prism/shop.pem", pem)


def test_ssl_cert_paths_are_checked() -> None:
    """The path is one safe word."""
    with pytest.raises(UnsafeArgument, match="certificate path"):
        cmd.commit_ssl_cert("/etc/prism/a.pem; show info")
