"""TLS termination on a listener: which certificates it serves, ALPN, the HTTP redirect.

An app with its own ``bind``, or a shared listener, may declare::

    tls:
      certs: [/etc/prism/certs/shop.pem, /etc/prism/certs/sites/]
      alpn: h2,http/1.1          # optional
      redirect_from: 8080        # optional: plain HTTP on this port answers 301 to https

``certs`` are PEM files (certificate, chain, key) or directories of them (a
path ending in ``/``) on every HAProxy node; with several, HAProxy picks by
SNI and the first is the default. A file (also one inside a listed
directory) can be replaced at runtime without a reload (``prism cert set``).
Nothing here does I/O.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prism import names

__all__ = ["MAX_CERTS", "Tls", "cert_file_allowed", "check_cert_path"]

#: the most certificate entries (files or directories) one listener may declare
MAX_CERTS = 16


def check_cert_path(value: object) -> str:
    """An absolute path of safe characters whose steps do not start with ``.`` (no ``.``,
    ``..`` or hidden steps) and are not empty; ValueError else. :data:`_PATH_SCHEMA` is
    the same rule as a JSON Schema pattern."""
    if not isinstance(value, str) or names.CERT_PATH.fullmatch(value) is None:
        raise ValueError(f"invalid certificate path: must match {names.CERT_PATH.pattern}")
    steps = value.removesuffix("/").removeprefix("/").split("/")
    if any(step == "" or step.startswith(".") for step in steps):
        raise ValueError("a certificate path may not hold '.', '..', hidden or '//' steps")
    return value


_PATH_SCHEMA: dict[str, Any] = {
    "pattern": "^/[A-Za-z0-9_-][A-Za-z0-9._-]*(?:/[A-Za-z0-9_-][A-Za-z0-9._-]*)*/?$",
    "maxLength": 200,
    "examples": ["/etc/prism/certs/shop.pem"],
}

CertPath = Annotated[str, Field(json_schema_extra=_PATH_SCHEMA)]


class Tls(BaseModel):
    """A listener's TLS termination (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    certs: tuple[CertPath, ...] = Field(min_length=1, max_length=MAX_CERTS)
    alpn: Literal["h2,http/1.1", "http/1.1", "h2"] | None = None
    redirect_from: int | None = Field(default=None, ge=1, le=65535, strict=True)

    @field_validator("certs")
    @classmethod
    def _valid_certs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            check_cert_path(item)
        if len(set(value)) != len(value):
            raise ValueError("duplicate certificate paths")
        return value

    @property
    def files(self) -> tuple[str, ...]:
        """The certificate files named one by one (not the directories)."""
        return tuple(item for item in self.certs if not item.endswith("/"))

    @property
    def directories(self) -> tuple[str, ...]:
        return tuple(item for item in self.certs if item.endswith("/"))


def cert_file_allowed(tls: Tls, path: str) -> bool:
    """Whether ``path`` is one of ``tls``'s files, or a file right inside one of its
    directories (HAProxy loads a directory's files, not those of its subdirectories)."""
    try:
        check_cert_path(path)
    except ValueError:
        return False
    if path.endswith("/"):
        return False
    if path in tls.files:
        return True
    parent = path.rsplit("/", 1)[0] + "/"
    return parent in tls.directories
