"""Checks of user-supplied option values, shared by every layer so each says the same thing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from jaxpoint.core.errors import InvalidArgumentError

_Policy = TypeVar("_Policy")


def require_int_at_least(value: object, minimum: int, *, what: str, fix: str,
                         allow_none: bool = False) -> int | None:
    """`value` if it is an int >= `minimum` (or None when `allow_none`); else an
    InvalidArgumentError naming `what` and ending "To fix, `fix`." Booleans are rejected
    though they are ints."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise InvalidArgumentError(f"Expected {what} to be {expected}, got {value!r}. To fix, {fix}.")
    return value


def require_positive_int(value: object, *, what: str, fix: str,
                         allow_none: bool = False) -> int | None:
    """`value` if it is an int >= 1 (or None when `allow_none`); see `require_int_at_least`."""
    return require_int_at_least(value, 1, what=what, fix=fix, allow_none=allow_none)


def require_policies(policies: Iterable[_Policy], *, method: str, kind: str,
                     example: str) -> tuple[_Policy, ...]:
    """`policies` as a tuple when each has a callable `method`; else an InvalidArgumentError
    naming the first that lacks it, the `kind` of policy expected and an `example`."""
    policies = tuple(policies)
    for policy in policies:
        if not callable(getattr(policy, method, None)):
            raise InvalidArgumentError(
                f"Expected {kind} policies with a {method} method, got {policy!r}. To fix, "
                f"pass objects such as {example}."
            )
    return policies
