"""Read-outs of show stat: each backend's counters from its BACKEND row."""

from __future__ import annotations

import csv
import io

import pytest

from prism.core.readings import Counters
from prism.errors import Drift, RuntimeAPIError
from prism.haproxy.parsers import parse_show_stat
from prism.haproxy.readouts import backend_counters as counters_from_stat
from prism.haproxy.readouts import server_readings

# --------------------------------------------------------------------------- show stat samples

#: The ``show stat`` header of HAProxy 2.8.25 (from tests/unit/haproxy/test_parsers.py).
HEADER = (
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
)

#: shop.blue's s1 and BACKEND rows as captured from HAProxy 2.8.25: 4 requests, all 2xx.
CAPTURED_ROWS = (
    "shop.blue,s1,0,0,0,1,,4,328,292,,0,,0,0,0,0,UP,1,1,0,0,0,11,0,,1,4,1,,4,,2,0,,4,L4OK,,0,0,4,"
    "0,0,0,0,,,,4,0,0,,,,,10,,,0,0,0,0,,,,Layer4 check passed,,2,3,4,,,,127.0.0.1:28081,,http,,,,"
    ",,,,0,4,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,0,,,,,,,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "shop.blue,BACKEND,0,0,0,1,1,4,328,292,0,0,,0,0,0,0,UP,1,1,0,,0,11,0,,1,4,0,,4,,1,0,,4,,,,0,4"
    ",0,0,0,0,,,,4,0,0,0,0,0,0,10,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,4,0,0,0,,,0,0,0,"
    "0,0,,,,,1,0,0,0,,,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,4,4,264,316,0,0,\n"
)

COLUMNS = next(csv.reader([HEADER[2:].rstrip("\n")]))


def stat_line(**values: object) -> str:
    """One ``show stat`` CSV line: the named columns set, every other column empty."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [str(values.get(name, "")) if name else "" for name in COLUMNS]
    )
    return out.getvalue()


def backend_line(proxy: str, **values: object) -> str:
    """A BACKEND row (type 1) of an HTTP backend with the given counters."""
    return stat_line(pxname=proxy, svname="BACKEND", type=1, mode="http", **values)


def server_line(proxy: str, server: str, **values: object) -> str:
    """A server row (type 2) of an HTTP backend with the given counters."""
    return stat_line(pxname=proxy, svname=server, type=2, mode="http", **values)


def frontend_line(proxy: str, **values: object) -> str:
    """A FRONTEND row (type 0) with the given counters."""
    return stat_line(pxname=proxy, svname="FRONTEND", type=0, mode="http", **values)


# --------------------------------------------------------------------------- counters_from_stat


def test_counters_from_captured_haproxy_28_rows() -> None:
    """On real 2.8 output the BACKEND row gives requests == req_tot, no 5xx, rtime."""
    rows = parse_show_stat(HEADER + CAPTURED_ROWS)
    backend = next(r for r in rows if r.server == "BACKEND")
    assert counters_from_stat(rows, "shop.blue") == Counters(4, 0, 0)
    assert backend.req_tot == 4


def test_counters_sum_every_response_class_of_the_backend_row() -> None:
    """requests = hrsp_1xx..5xx + other of the BACKEND row; servers and frontends are ignored."""
    text = HEADER + "".join(
        [
            frontend_line("fe", hrsp_2xx=9999, hrsp_5xx=9999, rtime=""),
            server_line("shop.green", "s1", hrsp_2xx=500, hrsp_5xx=40, rtime=999),
            backend_line(
                "shop.green",
                hrsp_1xx=1,
                hrsp_2xx=900,
                hrsp_3xx=30,
                hrsp_4xx=20,
                hrsp_5xx=45,
                hrsp_other=4,
                req_tot=1000,
                rtime=123,
            ),
            backend_line("shop.blue", hrsp_2xx=7, rtime=5),
        ]
    )
    rows = parse_show_stat(text)
    assert counters_from_stat(rows, "shop.green") == Counters(1000, 45, 123)
    assert counters_from_stat(rows, "shop.blue") == Counters(7, 0, 5)


def test_tcp_backend_counts_no_requests() -> None:
    """A TCP backend leaves the hrsp columns empty: 0 requests, so the judge waits."""
    text = HEADER + stat_line(pxname="db", svname="BACKEND", type=1, mode="tcp", rtime=0)
    assert counters_from_stat(parse_show_stat(text), "db") == Counters(0, 0, 0)


def test_missing_backend_is_drift() -> None:
    """A backend HAProxy does not report means the running config is not Prism's: Drift."""
    rows = parse_show_stat(HEADER + backend_line("shop.blue", hrsp_2xx=1))
    with pytest.raises(Drift, match=r"shop\.green"):
        counters_from_stat(rows, "shop.green")


def test_a_server_row_alone_is_not_a_backend() -> None:
    """Only the type-1 row counts: a server of the backend is not enough."""
    rows = parse_show_stat(HEADER + server_line("shop.green", "s1", hrsp_2xx=10))
    with pytest.raises(Drift, match=r"HAProxy reports no backend 'shop\.green' in show stat"):
        counters_from_stat(rows, "shop.green")


@pytest.mark.parametrize("value", ["x", "-3", "1.5"])
def test_malformed_counter_is_a_runtime_api_error(value: str) -> None:
    """A response counter that is not a whole count means HAProxy replied something else."""
    rows = parse_show_stat(HEADER + backend_line("shop.blue", hrsp_2xx=1, hrsp_4xx=value))
    with pytest.raises(RuntimeAPIError, match="hrsp_4xx"):
        counters_from_stat(rows, "shop.blue")


def test_server_readings_are_the_server_rows_only() -> None:
    """FRONTEND and BACKEND rows are not servers; a server row keeps its exact status."""
    text = HEADER + "".join(
        [
            frontend_line("fe"),
            server_line("shop.green", "s1", status="UP 1/2", check_status="L7OK", scur=3),
            backend_line("shop.green", status="UP"),
        ]
    )
    (only,) = server_readings(parse_show_stat(text), node="lb-1")
    assert (only.backend, only.server, only.status, only.check_status) == (
        "shop.green",
        "s1",
        "UP 1/2",
        "L7OK",
    )
    assert (only.in_use, only.node, only.ready) == (3, "lb-1", False)


def test_server_readings_carry_weight_warm_up_and_breaker() -> None:
    """uweight, the slowstart throttle, hanafail and a tripped breaker's words are read."""
    rows = parse_show_stat(
        HEADER
        + server_line("shop.blue", "s1", status="UP", check_status="L7OK", weight=60, uweight=100)
        + server_line(
            "shop.blue", "s2", status="UP", check_status="L7OK", weight=40, uweight=40, throttle=63
        )
        + server_line(
            "shop.blue",
            "s3",
            status="DOWN",
            check_status="* HANA",
            uweight=100,
            hanafail=3,
            last_chk="Detected 5 consecutive errors, last one was: HTTP status 500",
        )
    )
    s1, s2, s3 = server_readings(rows)
    assert (s1.user_weight, s1.warming, s1.trips, s1.tripped) == (100, None, 0, False)
    assert (s2.weight, s2.user_weight, s2.warming) == (40, 40, 63)
    assert s3.tripped
    assert s3.trips == 3
    assert s3.circuit == "Detected 5 consecutive errors, last one was: HTTP status 500"
    assert not s3.ready
