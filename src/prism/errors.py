"""Every error Prism raises on purpose, in one tree.

    PrismError                      500  exit 1
    ├── InvalidInput                422  exit 2   bad name, value or document
    │   ├── UnsafeArgument          422  exit 2   would reach the Runtime API unescaped
    │   ├── TooLarge                413  exit 2   a request body over its limit
    │   │   └── HeadersTooLarge     431  exit 2   request headers over their limit
    │   ├── UnsupportedMediaType    415  exit 2   a request body that is not JSON
    │   ├── RequestTimeout          408  exit 2   a client too slow to send its request
    │   └── MethodNotAllowed        405  exit 2   no such method on that path
    ├── NotFound                    404  exit 3   no such app, color, release ...
    ├── Conflict                    409  exit 4   state changed underneath / illegal move
    │   └── IllegalTransition       409  exit 4   a state machine refused a transition
    ├── GateFailed                  409  exit 5   a health or smoke gate refused a change
    ├── Unauthorized                401  exit 6   missing or wrong bearer token
    │   └── Forbidden               403  exit 6   a valid token that may not do this
    ├── RateLimited                 429  exit 10  too many changes per second: retry later
    ├── HAProxyError                502  exit 7   the data plane misbehaved
    │   ├── HAProxyNotFound         502  exit 7   no usable binary / version too old
    │   ├── ConfigRejected          502  exit 7   `haproxy -c` or a reload refused the config
    │   ├── RuntimeAPIError         502  exit 7   socket I/O failed or a command was refused
    │   ├── Drift                   502  exit 7   read-back disagrees with desired state
    │   └── NodeFailed              502  exit 7   a fleet node could not apply a change
    ├── StoreError                  503  exit 8   the state store failed
    │   └── Compacted               503  exit 8   a watch's history is gone: resync
    └── Unavailable                 503  exit 9   the Prism server cannot be reached

Each class carries its HTTP status, CLI exit code, title and problem ``type``
URI (``https://prism.dev/problems/<class-name-in-kebab-case>``, one per class,
derived from its name); the API and the CLI map them in exactly one place
each, and the CLI recognises an answer by its ``type``. Adapters translate OSError, sqlite3 and etcd
errors at their boundary with ``raise ... from exc``.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

__all__ = [
    "PROBLEM_BASE",
    "Compacted",
    "ConfigRejected",
    "Conflict",
    "Drift",
    "Forbidden",
    "GateFailed",
    "HAProxyError",
    "HAProxyNotFound",
    "HeadersTooLarge",
    "IllegalTransition",
    "InvalidInput",
    "MethodNotAllowed",
    "NodeFailed",
    "NotFound",
    "PrismError",
    "RateLimited",
    "RequestTimeout",
    "RuntimeAPIError",
    "StoreError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "UnsafeArgument",
    "UnsupportedMediaType",
    "error_classes",
]

#: where every problem ``type`` URI of Prism starts
PROBLEM_BASE = "https://prism.dev/problems/"


def _kebab(name: str) -> str:
    """``GateFailed`` -> ``gate-failed``, ``HAProxyNotFound`` -> ``haproxy-not-found``."""
    name = name.replace("HAProxy", "Haproxy").replace("API", "Api")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()


class PrismError(Exception):
    """Root of every deliberate Prism error.

    ``message`` says what went wrong; ``hint`` says what to do about it;
    ``detail`` carries structured data (readings, field errors) for the API.
    """

    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    title: ClassVar[str] = "Prism error"
    #: the problem ``type`` URI naming this class (set for every subclass, from its name)
    type_uri: ClassVar[str] = PROBLEM_BASE + "prism-error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.type_uri = PROBLEM_BASE + _kebab(cls.__name__)

    def __init__(
        self, message: str, *, hint: str | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    @classmethod
    def restore(
        cls, message: str, *, hint: str | None = None, detail: dict[str, Any] | None = None
    ) -> PrismError:
        """Rebuild an error of this class from a problem answer (the CLI's side)."""
        error = cls.__new__(cls)
        PrismError.__init__(error, message, hint=hint, detail=detail)
        return error


class InvalidInput(PrismError):
    status = 422
    exit_code = 2
    title = "Invalid input"


class UnsafeArgument(InvalidInput):
    title = "Unsafe Runtime API argument"


class TooLarge(InvalidInput):
    """A request body, or a spec, over its size limit; ``detail["limit"]`` says it."""

    status = 413
    title = "Content too large"


class HeadersTooLarge(TooLarge):
    status = 431
    title = "Request headers too large"


class UnsupportedMediaType(InvalidInput):
    status = 415
    title = "Unsupported media type"


class RequestTimeout(InvalidInput):
    """The client did not send its whole request in time; nothing was done."""

    status = 408
    title = "Request timeout"


class MethodNotAllowed(InvalidInput):
    """The path exists but not with this method; the answer's ``Allow`` lists those it has."""

    status = 405
    title = "Method not allowed"

    allow: tuple[str, ...] = ()

    def __init__(
        self, message: str, *, allow: tuple[str, ...] = (), hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.allow = allow


class NotFound(PrismError):
    status = 404
    exit_code = 3
    title = "Not found"


class Conflict(PrismError):
    status = 409
    exit_code = 4
    title = "Conflict"


class IllegalTransition(Conflict):
    title = "Illegal transition"


class GateFailed(PrismError):
    status = 409
    exit_code = 5
    title = "Gate failed"


class Unauthorized(PrismError):
    status = 401
    exit_code = 6
    title = "Unauthorized"


class Forbidden(Unauthorized):
    """The token is valid but may not make this change."""

    status = 403
    title = "Forbidden"


class RateLimited(PrismError):
    """Too many changes in too short a time for one token; nothing was changed.

    ``retry_after`` (seconds) is when the next one will be accepted.
    """

    status = 429
    exit_code = 10
    title = "Too many requests"
    retry_after: float = 1.0

    def __init__(self, message: str, *, retry_after: float, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, detail={"retry_after": retry_after})
        self.retry_after = retry_after


class HAProxyError(PrismError):
    status = 502
    exit_code = 7
    title = "HAProxy error"


class HAProxyNotFound(HAProxyError):
    title = "HAProxy not found"


class ConfigRejected(HAProxyError):
    title = "Configuration rejected"


class RuntimeAPIError(HAProxyError):
    title = "Runtime API error"


class Drift(HAProxyError):
    title = "Drift"


class NodeFailed(HAProxyError):
    """One or more fleet nodes refused a change or did not apply it in time.

    ``detail["nodes"]`` maps each such node to its reason.
    """

    title = "Node failed"


class StoreError(PrismError):
    status = 503
    exit_code = 8
    title = "Store error"


class Compacted(StoreError):
    """The store no longer has the history a watch asked for; read everything again."""

    title = "Store history compacted"

    def __init__(self, message: str, *, revision: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, detail={"revision": revision})
        self.revision = revision

    @classmethod
    def restore(
        cls, message: str, *, hint: str | None = None, detail: dict[str, Any] | None = None
    ) -> PrismError:
        revision = (detail or {}).get("revision")
        error = cls(message, revision=revision if isinstance(revision, int) else 0, hint=hint)
        error.detail.update(detail or {})
        return error


class Unavailable(PrismError):
    status = 503
    exit_code = 9
    title = "Prism unavailable"


def error_classes() -> tuple[type[PrismError], ...]:
    """Every class of the tree, root first, in the order of ``__all__``."""
    found = [PrismError]
    for name in __all__:
        cls = globals()[name]
        if isinstance(cls, type) and issubclass(cls, PrismError) and cls is not PrismError:
            found.append(cls)
    return tuple(found)
