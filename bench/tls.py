"""10. TLS termination: HTTPS throughput, and a certificate replaced at runtime vs a reload.

Throughput: one app on ``prism serve`` with ``tls: {certs: [site.pem]}`` (what
Prism renders: its routing rules, maps, smoke and pin ACLs, a color backend)
against a minimal hand-written HAProxy on the same binary: ``bind ... ssl crt
site.pem`` and one backend, both in front of the same in-memory backend (an
HAProxy answering from memory, never the bottleneck). Measured with ``wrk``
over kept-alive connections (request cost) and ``hey -disable-keepalive`` (a
full TLS handshake per request), alternating the two configs; the ratio is
Prism's rate over the hand-written one's.

Rotation: a new certificate through ``PUT /certificates/shop`` (checked,
written to disk, ``set ssl cert`` + ``commit ssl cert``, read back, audited),
timed until the API answers; baselines on the hand-written HAProxy: the file
written and the same two commands sent by hand, and the file written and a
``reload`` through the master socket (synchronous on 2.8: it answers once the
new worker runs). After each one a fresh handshake must see the new serial.
"""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import time
from pathlib import Path
from typing import Any

from cryptography import x509

from bench.common import (
    BenchContext,
    Section,
    free_port,
    haproxy_globals,
    ratio,
    run_haproxy,
    run_hey,
    run_prism,
    run_wrk,
    static_backend_config,
    table,
    temp_dir,
)
from prism.testing.certs import TestCA

NAME = "tls"
TITLE = "10. TLS termination and certificate rotation"


def _serial(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="shop.test") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return format(x509.load_der_x509_certificate(der).serial_number, "X").lstrip("0")


def _until_served(port: int, serial: str, began: float, timeout: float = 60) -> float:
    """Seconds from ``began`` until a fresh handshake on ``port`` sees ``serial`` (each
    replacement is proven this way; the tables time the replacement itself)."""
    while _serial(port) != serial:
        if time.perf_counter() - began > timeout:
            raise RuntimeError(f"serial {serial} not served within {timeout:g} s")
        time.sleep(0.002)
    return time.perf_counter() - began


def _hand_written(root: Path, port: int, cert: Path, backend_port: int) -> str:
    return haproxy_globals(root) + (
        "frontend site\n"
        f"    bind 127.0.0.1:{port} ssl crt {cert}\n"
        "    default_backend app\n"
        "backend app\n"
        f"    server s1 127.0.0.1:{backend_port}\n"
    )


def run(ctx: BenchContext) -> Section:
    seconds = ctx.size(5, 1)
    rounds = ctx.size(4, 1)
    rotations = ctx.size(20, 3)
    ca = TestCA.create()
    with temp_dir(ctx.tmp, "tls-") as work:
        static_root, hand_root, state = work / "static", work / "hand", work / "state"
        for directory in (static_root, hand_root, state):
            directory.mkdir()
        prism_cert, hand_cert = work / "prism-site.pem", work / "hand-site.pem"
        for path in (prism_cert, hand_cert):
            path.write_text(ca.issue(["shop.test"]).bundle)
            path.chmod(0o600)
        static_port, prism_port, hand_port = free_port(), free_port(), free_port()
        with (
            run_haproxy(ctx, static_root, static_backend_config(static_root, static_port)),
            run_haproxy(
                ctx, hand_root, _hand_written(hand_root, hand_port, hand_cert, static_port)
            ) as hand,
            run_prism(ctx, state) as prism,
        ):
            spec = {
                "apps": [
                    {
                        "name": "shop",
                        "bind": f"127.0.0.1:{prism_port}",
                        "stable": "blue",
                        "tls": {"certs": [str(prism_cert)]},
                        "check": {"path": "/", "inter_ms": "1s"},
                        "colors": [{"name": "blue", "servers": [f"127.0.0.1:{static_port}"]}],
                    }
                ]
            }
            prism.api("PUT", "/config", {"spec": spec, "reason": "bench tls"})
            prism.wait_up("shop", timeout=60)
            load: dict[str, dict[str, list[float]]] = {
                "prism": {"wrk": [], "hey": []},
                "hand": {"wrk": [], "hey": []},
            }
            errors: dict[str, int] = {"prism": 0, "hand": 0}
            for n in range(rounds):
                ctx.log(f"  tls: throughput round {n + 1}/{rounds}")
                order = [("hand", hand_port), ("prism", prism_port)]
                for who, port in order if n % 2 == 0 else order[::-1]:
                    wrk = run_wrk(f"https://127.0.0.1:{port}/", seconds=seconds, connections=32)
                    hey = run_hey(
                        f"https://127.0.0.1:{port}/",
                        concurrency=16,
                        seconds=seconds,
                        keepalive=False,
                    )
                    load[who]["wrk"].append(wrk.rps)
                    load[who]["hey"].append(hey.rps)
                    errors[who] += wrk.non_2xx + wrk.errors + hey.non_2xx
            ctx.log(f"  tls: {rotations} rotations each way")
            runtime, commit, reload = [], [], []
            for _ in range(rotations):
                leaf = ca.issue(["shop.test"])
                began = time.perf_counter()
                answer = prism.api("PUT", "/certificates/shop", {"pem": leaf.bundle})
                runtime.append(time.perf_counter() - began)
                _until_served(prism_port, leaf.serial, began)
                commit.append(float(answer["commit_ms"]) / 1000)
            by_hand: list[float] = []
            for _ in range(rotations):
                leaf = ca.issue(["shop.test"])
                began = time.perf_counter()
                hand_cert.write_text(leaf.bundle)
                # the bundle ends in a newline; the command's own newline ends the payload
                if "Transaction created" not in hand.cmd(
                    f"set ssl cert {hand_cert} <<\n{leaf.bundle}"
                ):
                    raise RuntimeError("set ssl cert refused on the hand-written HAProxy")
                if "Success!" not in hand.cmd(f"commit ssl cert {hand_cert}"):
                    raise RuntimeError("commit ssl cert refused on the hand-written HAProxy")
                by_hand.append(time.perf_counter() - began)
                _until_served(hand_port, leaf.serial, began)
            for _ in range(rotations):
                leaf = ca.issue(["shop.test"])
                began = time.perf_counter()
                hand_cert.write_text(leaf.bundle)
                hand.reload()
                reload.append(time.perf_counter() - began)
                _until_served(hand_port, leaf.serial, began)
    return Section(
        NAME, TITLE, _report(seconds, rounds, load, errors, runtime, commit, by_hand, reload)
    )


def _report(
    seconds: float,
    rounds: int,
    load: dict[str, dict[str, list[float]]],
    errors: dict[str, int],
    runtime: list[float],
    commit: list[float],
    by_hand: list[float],
    reload: list[float],
) -> str:
    med = statistics.median

    def ms(values: list[float]) -> str:
        return f"{med(values) * 1000:.1f} (max {max(values) * 1000:.1f})"

    rows: list[list[Any]] = []
    for tool, label in (
        ("wrk", "wrk, 32 kept-alive connections"),
        ("hey", "hey, 16, a handshake each"),
    ):
        prism_rate, hand_rate = med(load["prism"][tool]), med(load["hand"][tool])
        rows.append([label, prism_rate, hand_rate, ratio(prism_rate, hand_rate)])
    headline = (
        f"**Ratio**: HTTPS through Prism's rendered config serves "
        f"{ratio(med(load['prism']['wrk']), med(load['hand']['wrk']))} the requests/s of a "
        f"minimal hand-written TLS config (kept-alive), "
        f"{ratio(med(load['prism']['hey']), med(load['hand']['hey']))} with a handshake per "
        f"request; replacing a certificate through Prism takes {med(runtime) * 1000:.1f} ms = "
        f"{ratio(med(runtime), med(reload))} the time of a file write and a reload (the same "
        f"runtime commands sent by hand: {ratio(med(by_hand), med(reload))}), with no new "
        "worker.\n\n"
    )
    return (
        headline
        + f"Requests/s, median of {rounds} round(s) of {seconds:g} s per tool and config, the "
        "configs alternating (which goes first, too); the same HAProxy binary, certificate "
        "type (P-256) and in-memory backend. With a handshake per request, the load "
        "generator's own handshakes share the two cores with HAProxy and bound both rates. "
        f"Failed or non-2xx answers: Prism {errors['prism']}, hand-written "
        f"{errors['hand']}.\n\n"
        + table(["load", "Prism's config", "hand-written", "Prism / hand-written"], rows)
        + f"\nCertificate replacement, {len(runtime)} times each: ms until it is done (the API "
        "answers; the commit answers; the reload answers), median and max; after each, a "
        "fresh handshake saw the new serial:\n\n"
        + table(
            ["how", "ms", "of which HAProxy's set + commit"],
            [
                [
                    "Prism: PUT /certificates (check, write, set + commit, read back, audit)",
                    ms(runtime),
                    ms(commit),
                ],
                [
                    "by hand: write the file, `set ssl cert` + `commit ssl cert`",
                    ms(by_hand),
                    "-",
                ],
                ["by hand: write the file, `reload` on the master socket", ms(reload), "-"],
            ],
        )
        + "\nPrism's extra time over the hand-sent commands is its own work around them: the "
        "API request, the checks of the bundle, an fsynced file, the read-back and an "
        "fsynced audit record. The reload also starts a new worker and leaves the old one "
        "to finish its connections; a runtime replacement keeps the one worker, whose open "
        "connections keep their certificate. Load average when the section ended: "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; with other work on the machine "
        "the ratios move by tens of percent between runs.\n"
    )
