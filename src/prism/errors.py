"""Every error Prism raises on purpose, in one tree.

    PrismError                      500  exit 1
    ├── InvalidInput                422  exit 2   bad name, value or document
    │   └── UnsafeArgument          422  exit 2   would reach the Runtime API unescaped
    ├── NotFound                    404  exit 3   no such app, color, release ...
    ├── Conflict                    409  exit 4   state changed underneath / illegal move
    │   └── IllegalTransition       409  exit 4   a state machine refused a transition
    ├── GateFailed                  409  exit 5   a health or smoke gate refused a change
    ├── Unauthorized                401  exit 6   missing or wrong bearer token
    ├── HAProxyError                502  exit 7   the data plane misbehaved
    │   ├── HAProxyNotFound         502  exit 7   no usable binary / version too old
    │   ├── ConfigRejected          502  exit 7   `haproxy -c` or a reload refused the config
    │   ├── RuntimeAPIError         502  exit 7   socket I/O failed or a command was refused
    │   ├── Drift                   502  exit 7   read-back disagrees with desired state
    │   └── NodeFailed              502  exit 7   a fleet node could not apply a change
    ├── StoreError                  503  exit 8   the state store failed
    │   └── Compacted               503  exit 8   a watch's history is gone: resync
    └── Unavailable                 503  exit 9   the Prism server cannot be reached

Each class carries its HTTP status and CLI exit code; the API and the CLI map
them in exactly one place each. Adapters translate OSError, sqlite3 and etcd
errors at their boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "Compacted",
    "ConfigRejected",
    "Conflict",
    "Drift",
    "GateFailed",
    "HAProxyError",
    "HAProxyNotFound",
    "IllegalTransition",
    "InvalidInput",
    "NodeFailed",
    "NotFound",
    "PrismError",
    "RuntimeAPIError",
    "StoreError",
    "Unauthorized",
    "Unavailable",
    "UnsafeArgument",
]


class PrismError(Exception):
    """Root of every deliberate Prism error.

    ``message`` says what went wrong; ``hint`` says what to do about it;
    ``detail`` carries structured data (readings, field errors) for the API.
    """

    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    title: ClassVar[str] = "Prism error"

    def __init__(
        self, message: str, *, hint: str | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InvalidInput(PrismError):
    status = 422
    exit_code = 2
    title = "Invalid input"


class UnsafeArgument(InvalidInput):
    title = "Unsafe Runtime API argument"


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


class Unavailable(PrismError):
    status = 503
    exit_code = 9
    title = "Prism unavailable"
