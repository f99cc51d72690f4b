"""TLS settings of apps and listeners are validated with the spec."""

from __future__ import annotations

from typing import Any

import pytest

from prism.core.model import Spec, parse_model
from prism.core.tls import Tls, cert_file_allowed
from prism.errors import InvalidInput


def _spec(**tls: Any) -> dict[str, Any]:
    return {
        "apps": [
            {
                "name": "shop",
                "bind": "127.0.0.1:8443",
                "stable": "blue",
                "tls": tls,
                "colors": [{"name": "blue", "servers": ["127.0.0.1:9001"]}],
            }
        ]
    }


def test_files_and_directories_are_told_apart() -> None:
    """A path ending in '/' is a directory of certificates."""
    tls = Tls(certs=("/etc/prism/shop.pem", "/etc/prism/sites/"), alpn="h2,http/1.1")
    assert tls.files == ("/etc/prism/shop.pem",)
    assert tls.directories == ("/etc/prism/sites/",)


@pytest.mark.parametrize(
    "path",
    [
        "relative.pem",
        "/etc/../shadow",
        "/etc/./x.pem",
        "/etc//x.pem",
        "/a b.pem",
        "/x;y",
        "/",
        "/etc/.x/a.pem",
    ],
)
def test_unsafe_certificate_paths_are_refused(path: str) -> None:
    """Absolute, safe characters, no '.' or '..' steps."""
    with pytest.raises(InvalidInput, match="certificate path"):
        parse_model(Spec, _spec(certs=[path]))


def test_a_redirect_port_may_not_collide() -> None:
    """redirect_from binds a port like any listener."""
    spec = _spec(certs=["/etc/prism/shop.pem"], redirect_from=8443)
    with pytest.raises(InvalidInput, match="both bind port 8443"):
        parse_model(Spec, spec)


def test_an_app_on_a_shared_listener_takes_the_listener_tls() -> None:
    """TLS is a property of the bind."""
    spec = {
        "listeners": [{"name": "web", "bind": "127.0.0.1:8443"}],
        "apps": [
            {
                "name": "shop",
                "listener": "web",
                "host": "shop.test",
                "stable": "blue",
                "tls": {"certs": ["/etc/prism/shop.pem"]},
                "colors": [{"name": "blue"}],
            }
        ],
    }
    with pytest.raises(InvalidInput, match="uses the listener's 'tls'"):
        parse_model(Spec, spec)


def test_unknown_alpn_and_empty_certs_are_refused() -> None:
    """ALPN is one of three lists; at least one certificate."""
    with pytest.raises(InvalidInput, match="alpn"):
        parse_model(Spec, _spec(certs=["/etc/prism/shop.pem"], alpn="spdy"))
    with pytest.raises(InvalidInput, match="certs"):
        parse_model(Spec, _spec(certs=[]))


def test_which_files_a_rotation_may_replace() -> None:
    """A listed file, or a file right inside a listed directory: nothing else."""
    tls = Tls(certs=("/etc/prism/shop.pem", "/etc/prism/sites/"))
    assert cert_file_allowed(tls, "/etc/prism/shop.pem")
    assert cert_file_allowed(tls, "/etc/prism/sites/a.pem")
    assert not cert_file_allowed(tls, "/etc/prism/sites/deeper/a.pem")
    assert not cert_file_allowed(tls, "/etc/prism/other.pem")
    assert not cert_file_allowed(tls, "/etc/prism/sites/../x.pem")
    assert not cert_file_allowed(tls, "/etc/prism/sites/")
