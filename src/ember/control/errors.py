"""What the control plane refuses, and why: one hierarchy under `EmberError`.

Each kind says what went wrong in words a person can act on; the HTTP layer gives each kind
its status and shape in one place (`api/errors.py`: Replicate's `{"title", "detail",
"status"}` or OpenAI's `{"error": {...}}`), so no route catches these one by one. Errors of
the layers below (a package that does not parse, an environment that does not build, an
address egress refuses) are turned into these kinds where the control plane calls them.
"""

from __future__ import annotations

from typing import Any

from ember.control.policies.budgets import Refusal


class EmberError(Exception):
    """Something a request asked for that Ember will not or cannot do."""


class NotFound(EmberError, LookupError):
    """No such model, version, deployment, prediction or file — or one the caller may not
    see, which is reported exactly as a missing one (HTTP 404)."""


class Forbidden(EmberError, PermissionError):
    """The caller's own object, but its token's scope does not allow the action (HTTP 403)."""


class Conflict(EmberError):
    """The request clashes with what exists (HTTP 409)."""


class InvalidRequest(EmberError, ValueError):
    """Well-formed, but asks for something impossible: an input the model's schema refuses
    (`details` per field, Cog's shape), a setting out of range (HTTP 422; 400 on OpenAI's
    routes)."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class PackageError(InvalidRequest):
    """An uploaded package cannot become a version: it does not unpack, parse, build its
    environment or set up (HTTP 422)."""


class BadRequest(EmberError):
    """A parameter of the request (not a model input) is wrong: a price, a webhook
    (HTTP 400)."""


class EgressDenied(BadRequest):
    """A webhook names an address replicas and webhooks may not reach (HTTP 400)."""


class QueueFull(EmberError):
    """The deployment's queue is at its `queue_limit` (HTTP 429 with Retry-After)."""

    def __init__(self, name: str, limit: int) -> None:
        super().__init__(
            f"deployment {name} has {limit} predictions waiting (its queue_limit): "
            "retry shortly, or raise max_instances or queue_limit"
        )
        self.retry_after = 1


class RateLimited(EmberError):
    """The token made more requests than its limit allows (HTTP 429 with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExceeded(EmberError):
    """A budget of the caller's token or of the deployment is spent (HTTP 402); the message
    names the budget and when it resets."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal
