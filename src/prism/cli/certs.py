"""``prism cert set`` and ``prism certs``: TLS certificates replaced at runtime; expiry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from prism.cli.common import Ctx, handles_errors, json_option, pass_ctx, path
from prism.cli.output import echo_json
from prism.errors import InvalidInput

__all__ = ["cert", "certs", "format_certs"]

#: the largest PEM file the CLI reads (the server refuses bigger bundles too)
_MAX_PEM = 15_000


def format_certs(rows: list[dict[str, Any]]) -> str:
    """Per TLS listener or app: each file HAProxy serves, its names, serial and expiry."""
    if not rows:
        return "no listener terminates TLS: add tls: {certs: [...]} to an app or listener"
    lines = []
    for row in rows:
        extra = "".join(
            [
                f"  alpn {row['alpn']}" if row.get("alpn") else "",
                f"  redirect from :{row['redirect_from']}" if row.get("redirect_from") else "",
            ]
        )
        lines.append(f"{row['kind']} {row['name']}  (bind {row['bind']}){extra}")
        serving = row.get("serving") or []
        if not serving:
            lines.append("  (HAProxy reports no certificate for it)")
        for seen in serving:
            days = seen.get("days_left")
            left = f"{days:.0f} days left" if isinstance(days, int | float) else "?"
            warning = f"  WARNING: {seen['warning']}" if seen.get("warning") else ""
            lines.append(
                f"  {seen['path']}  {seen.get('subject', '')}  serial {seen.get('serial', '')}"
                f"  until {seen.get('not_after', '?')} ({left}){warning}"
            )
    return "\n".join(lines)


@click.command("certs")
@json_option
@pass_ctx
@handles_errors
def certs(ctx: Ctx, as_json: bool) -> None:
    """List every TLS listener and app with the certificates HAProxy serves and when
    they expire (a warning 30 days ahead)."""
    answer = ctx.call("GET", "/certificates")
    echo_json(answer) if as_json else click.echo(format_certs(answer))


@click.group("cert")
def cert() -> None:
    """Replace a TLS certificate without a reload."""


@cert.command("set")
@click.argument("name")
@click.argument("pem_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--file", "target", help="the certificate file to replace (default: its only one)")
@click.option("--reason", help="why (kept in the audit log)")
@json_option
@pass_ctx
@handles_errors
def set_cert(
    ctx: Ctx, name: str, pem_file: Path, target: str | None, reason: str | None, as_json: bool
) -> None:
    """Serve PEM_FILE (certificate, chain, key) on app or listener NAME, at runtime.

    Checked first (key matches, chain in order, valid now, PEM lines only), written to
    the certificate file, swapped in with `set ssl cert` / `commit ssl cert`, read back
    and audited. A refused bundle changes nothing."""
    try:
        raw = pem_file.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {pem_file}: {exc.strerror}") from exc
    if len(raw) > _MAX_PEM:
        raise InvalidInput(f"{pem_file} is larger than {_MAX_PEM:,} bytes")
    try:
        pem = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput(f"{pem_file} is not a PEM file (it is not ASCII)") from None
    body: dict[str, Any] = {"pem": pem}
    if target is not None:
        body["file"] = target
    if reason is not None:
        body["reason"] = reason
    answer = ctx.call("PUT", f"/certificates/{path(name)}", body)
    if as_json:
        echo_json(answer)
        return
    click.echo(
        f"{answer['path']}: now serving {answer['subject']} serial {answer['serial']} "
        f"until {answer['not_after']} (committed in {answer['commit_ms']:.1f} ms, no reload)"
    )
