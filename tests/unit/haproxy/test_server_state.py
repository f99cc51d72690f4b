"""Saved server state never brings a server back on an old address."""

from __future__ import annotations

from prism.haproxy.server_state import filter_server_state

HEADER = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
    "srv_agent_addr srv_agent_port\n"
)
BLUE = "4 shop.blue 1 s1 127.0.0.1 2 0 1 1 0 8 2 0 6 0 0 0 - 9001 - 0 0 - - 0"
GREEN = "5 shop.green 1 s1 127.0.0.1 2 0 1 1 0 8 2 2 6 0 0 0 - 9002 - 0 0 - - 0"


def test_keeps_unchanged_servers_and_drops_moved_or_gone_ones() -> None:
    """Same address and port: kept. New port or removed server: dropped."""
    text = HEADER + BLUE + "\n" + GREEN + "\n"
    kept = filter_server_state(
        text, {("shop.blue", "s1"): ("127.0.0.1", 9001), ("shop.green", "s1"): ("127.0.0.1", 9999)}
    )
    assert BLUE in kept
    assert GREEN not in kept
    assert kept.startswith("1\n# be_id")
    assert filter_server_state(text, {}) == HEADER


def test_unknown_format_starts_fresh() -> None:
    """A file Prism cannot read is replaced by nothing rather than trusted."""
    assert filter_server_state("garbage", {}) == ""
    assert filter_server_state("1\n# a b c\n1 2 3\n", {}) == ""


def test_discovery_slots_keep_their_lines_whatever_their_address() -> None:
    """A slot's address comes from DNS, not the spec: its saved line is kept so a reload
    starts it on the address it had (init-addr last)."""
    slot = "3 shop.blue 1 srv1 10.0.0.5 2 0 1 1 8 6 3 4 6 0 0 0 n1.consul 18081 _h._tcp.x"
    text = HEADER + slot + " 0 0 - - 0\n"
    kept = filter_server_state(text, {("shop.blue", "srv1"): None})
    assert kept.splitlines()[2].split()[3:5] == ["srv1", "10.0.0.5"]
    assert filter_server_state(text, {}) == HEADER
