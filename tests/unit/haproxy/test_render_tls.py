"""TLS listeners render as `bind ... ssl crt ...`, with ALPN and a redirecting plain bind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prism.core.model import Spec
from prism.haproxy.render import RenderSettings, fd_demand, render_config
from prism.node.admission import binds
from prism.node.paths import StatePaths

PATHS = StatePaths(Path("/var/lib/prism"))
SETTINGS = RenderSettings(admin_port=8404, maxconn=9000, smoke_key="GoldenSmokeKey0123456789")
COLORS = [{"name": "blue", "servers": ["127.0.0.1:9001"]}]


def _app(**extra: Any) -> dict[str, Any]:
    return {"name": "shop", "stable": "blue", "colors": COLORS, **extra}


def test_an_app_bind_with_certificates_alpn_and_redirect() -> None:
    """Every certificate on the bind (directories without their '/'), ALPN, and a plain
    bind whose only rule, first of all, sends the client to https on the TLS port."""
    tls = {
        "certs": ["/etc/prism/shop.pem", "/etc/prism/sites/"],
        "alpn": "h2,http/1.1",
        "redirect_from": 8080,
    }
    spec = Spec.model_validate({"apps": [_app(bind="127.0.0.1:8443", tls=tls)]})
    config = render_config(spec, PATHS, SETTINGS)
    frontend = config.split("frontend app_shop\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert frontend[0] == (
        "    bind 127.0.0.1:8443 ssl crt /etc/prism/shop.pem crt /etc/prism/sites alpn h2,http/1.1"
    )
    assert frontend[1] == "    bind 127.0.0.1:8080"
    requests = [line for line in frontend if line.startswith("    http-request")]
    assert requests[0] == (
        "    http-request redirect location https://%[req.hdr(host),field(1,:)]:8443"
        "%[capture.req.uri] code 301 unless { ssl_fc }"
    )
    assert binds(spec) == ["127.0.0.1:8443", "127.0.0.1:8080"]
    plain = Spec.model_validate({"apps": [_app(bind="127.0.0.1:8443")]})
    assert fd_demand(spec, 100) == fd_demand(plain, 100) + 1


def test_port_443_needs_no_port_in_the_redirect() -> None:
    """https://host/... on the default port."""
    tls = {"certs": ["/etc/prism/shop.pem"], "redirect_from": 80}
    spec = Spec.model_validate({"apps": [_app(bind="0.0.0.0:443", tls=tls)]})
    config = render_config(spec, PATHS, SETTINGS)
    assert "https://%[req.hdr(host),field(1,:)]%[capture.req.uri] code 301" in config
    assert "    bind 0.0.0.0:80\n" in config


def test_a_shared_listener_terminates_tls_for_its_apps() -> None:
    """The redirect comes before the unknown-host 404; without TLS nothing changes."""
    spec = Spec.model_validate(
        {
            "listeners": [
                {
                    "name": "web",
                    "bind": "127.0.0.1:8443",
                    "tls": {"certs": ["/etc/prism/a.pem", "/etc/prism/b.pem"], "redirect_from": 80},
                }
            ],
            "apps": [_app(listener="web", host="shop.test")],
        }
    )
    config = render_config(spec, PATHS, SETTINGS)
    assert "    bind 127.0.0.1:8443 ssl crt /etc/prism/a.pem crt /etc/prism/b.pem\n" in config
    assert config.index("http-request redirect location") < config.index("return status 404")
    plain = render_config(
        Spec.model_validate(
            {
                "listeners": [{"name": "web", "bind": "127.0.0.1:8443"}],
                "apps": [_app(listener="web", host="shop.test")],
            }
        ),
        PATHS,
        SETTINGS,
    )
    assert " ssl " not in plain
    assert "redirect" not in plain


def test_a_fleet_listen_address_applies_to_both_binds() -> None:
    """A node's --listen-address replaces the wildcard on the TLS and the redirect bind."""
    tls = {"certs": ["/etc/prism/shop.pem"], "redirect_from": 8080}
    spec = Spec.model_validate({"apps": [_app(bind="*:8443", tls=tls)]})
    settings = RenderSettings(
        admin_port=8404,
        maxconn=9000,
        smoke_key="GoldenSmokeKey0123456789",
        listen_address="10.0.0.7",
    )
    config = render_config(spec, PATHS, settings)
    assert "    bind 10.0.0.7:8443 ssl crt /etc/prism/shop.pem\n    bind 10.0.0.7:8080\n" in config
