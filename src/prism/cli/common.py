"""Plumbing shared by the CLI's commands: the context, error mapping, the async edge.

Commands that call the API are synchronous (:meth:`Ctx.call`); only the daemons
(``serve``, ``agent``, ``demo``) run an event loop, through :func:`run`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar
from urllib.parse import quote

import click

from prism.cli.client import ApiClient, locate
from prism.errors import InvalidInput, PrismError

__all__ = [
    "Ctx",
    "handles_errors",
    "json_option",
    "load_yaml_file",
    "naming_file",
    "pass_ctx",
    "path",
    "run",
]

P = ParamSpec("P")
T = TypeVar("T")


def _fail(error: PrismError) -> NoReturn:
    click.echo(f"error: {error.message}", err=True)
    if error.hint:
        click.echo(f"  hint: {error.hint}", err=True)
    for problem in (
        error.detail.get("errors", [])[1:] if len(error.detail.get("errors", [])) > 1 else []
    ):
        click.echo(f"  - {problem}", err=True)
    sys.exit(error.exit_code)


def handles_errors(fn: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except PrismError as exc:
            _fail(exc)

    return wrapper


def run(coro: Awaitable[T]) -> T:
    import asyncio  # not at the top: `prism --help` and argument errors never need it

    async def main() -> T:
        return await coro

    return asyncio.run(main())


class Ctx:
    def __init__(
        self,
        url: str | None,
        token: str | None,
        state_dir: Path | None,
        cacert: Path | None = None,
    ) -> None:
        self.url, self.token, self.state_dir, self.cacert = url, token, state_dir, cacert

    def client(self) -> ApiClient:
        return ApiClient(locate(self.url, self.token, self.state_dir, self.cacert))

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.client().request(method, path, body)


pass_ctx = click.make_pass_decorator(Ctx)
json_option = click.option("--json", "as_json", is_flag=True, help="print the API's JSON answer")


@contextlib.contextmanager
def naming_file(file: Path | None) -> Iterator[None]:
    """Prefix a refusal of what ``file`` held (InvalidInput) with the file's name."""
    try:
        yield
    except InvalidInput as exc:
        if file is not None:
            exc.message = f"{file}: {exc.message}"
        raise


def load_yaml_file(path: Path) -> Any:
    """Read a YAML file with clear errors (size, encoding, syntax)."""
    import yaml  # imported here: most commands never read a file, and it costs start-up time

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from exc
    if len(raw) > 10_000_000:
        raise InvalidInput(f"{path} is larger than 10 MB")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not valid YAML: {str(exc)[:300]}") from None
    return data


def path(name: str) -> str:
    """An app name as a URL path segment; the server validates it strictly."""
    return quote(name, safe="")
