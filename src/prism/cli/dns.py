"""``prism dns-weights``: health-weighted DNS weights per app and node, or a Route 53 batch."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import click

from prism.cli.common import Ctx, handles_errors, pass_ctx
from prism.cli.output import echo_json

__all__ = ["dns_weights", "format_dns_weights"]


def format_dns_weights(rows: list[dict[str, Any]]) -> str:
    """One line per app and node: weight, healthy of all servers, the record."""
    if not rows:
        return "no apps (or no node reports yet)"
    lines = [f"{'APP':<16} {'NODE':<16} {'ADDRESS':<16} {'WEIGHT':>6}  HEALTHY  RECORD"]
    for row in rows:
        record = f"{row['name']} (ttl {row['ttl']}s)" if row["name"] else "- (no dns.name or host)"
        lines.append(
            f"{row['app']:<16} {row['node']:<16} {row['address']:<16} {row['weight']:>6}  "
            f"{row['healthy']}/{row['servers']:<5}  {record}"
        )
    return "\n".join(lines)


@click.command("dns-weights")
@click.argument("app", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "route53"]),
    default="text",
    show_default=True,
    help="route53: a change batch for `aws route53 change-resource-record-sets`",
)
@pass_ctx
@handles_errors
def dns_weights(ctx: Ctx, app: str | None, fmt: str) -> None:
    """Per app (and node) the share of healthy servers of the colors carrying traffic,
    as a 0-100 DNS weight. Prism makes no cloud call: pipe the route53 batch on, e.g.
    `aws route53 change-resource-record-sets --hosted-zone-id Z --change-batch file:///dev/stdin`."""
    query = {"format": "route53" if fmt == "route53" else "json"}
    if app is not None:
        query["app"] = app
    answer = ctx.call("GET", f"/dns-weights?{urlencode(query)}")
    if fmt == "text":
        click.echo(format_dns_weights(answer))
    else:
        echo_json(answer)
