"""Settings read from the environment, parsed one way everywhere: a bad value is the deployment's
mistake, said plainly at start rather than found by the first user."""

from __future__ import annotations

import os

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")


def text(name: str) -> str | None:
    """The variable's value, or None when it is unset or blank."""
    return os.environ.get(name, "").strip() or None


def flag(name: str) -> bool:
    """1/true/yes/on or 0/false/no/off (unset is off)."""
    raw = (text(name) or "").lower()
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise ValueError(f"{name} must be 1 or 0 (true or false), not {os.environ[name]!r}")


def positive_number(name: str, default: float) -> float:
    """A number above zero, or `default` when unset."""
    raw = text(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {raw!r}")
    return value


def positive_int(name: str, default: int) -> int:
    """A whole number above zero, or `default` when unset."""
    value = positive_number(name, default)
    if value != int(value):
        raise ValueError(f"{name} must be a whole number, not {text(name)!r}")
    return int(value)
