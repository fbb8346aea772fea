"""Who may do what: a token's scope and owner against an action and the owner of its object.

Three scopes, each including the one before it (LiteLLM's and Baseten's split of keys):

- `predict`: run predictions on its owner's models and deployments (and on public models),
  upload input files, and read what its owner has; what automation in production needs.
- `deploy`: also create, change and delete its owner's models, versions and deployments.
- `admin`: the operator: everything, across every owner, and tokens, prices and budgets.

Objects of another owner are answered as missing (404), not as forbidden: a token must not
learn which names another tenant uses. A missing scope on one's own object is a 403 that
names the scope needed. Pure rules; the HTTP layer asks them before it acts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ember.control.errors import Forbidden

SCOPES = ("predict", "deploy", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's owner and scope, and which token (its spend is tracked)."""

    owner: str
    scope: str
    token_id: str | None = None  # None for the admin token given on the command line

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    def key(self) -> str:
        """What rate limits count against: the token (the command line's admin token too)."""
        return self.token_id or "admin"


def allows(principal: Principal, scope: str) -> bool:
    """Whether the token's scope includes `scope`."""
    return SCOPES.index(principal.scope) >= SCOPES.index(scope)


def require(principal: Principal, scope: str, action: str) -> None:
    """Raise Forbidden unless the token's scope includes `scope` (e.g. "deploy")."""
    if not allows(principal, scope):
        raise Forbidden(
            f"this token's scope is {principal.scope!r}; to {action} you need a token with "
            f"scope {scope!r} or wider (an admin makes one: `ember token create --scope {scope}`)"
        )


def sees(principal: Principal, owner: str, public: bool = False) -> bool:
    """Whether the caller may read an object of `owner` (public models are read by anyone)."""
    return public or principal.is_admin or principal.owner == owner


def acts_for(principal: Principal, owner: str, scope: str, action: str) -> bool:
    """Whether the caller may change an object of `owner`: False if the object is not its
    own (the caller answers 404), Forbidden if it is but the scope is too narrow."""
    if not (principal.is_admin or principal.owner == owner):
        return False
    require(principal, scope, action)
    return True
