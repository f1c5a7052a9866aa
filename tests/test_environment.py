"""Settings from the environment: one parser, and a bad value named with the variable."""

from __future__ import annotations

import pytest

from whisper_core import environment


def test_flags_numbers_and_text(monkeypatch):
    monkeypatch.setenv("W_FLAG", " Yes ")
    monkeypatch.setenv("W_COUNT", "8")
    monkeypatch.setenv("W_BLANK", "  ")
    assert environment.flag("W_FLAG") and not environment.flag("W_UNSET")
    assert environment.positive_int("W_COUNT", 4) == 8 and environment.positive_int("W_UNSET", 4) == 4
    assert environment.text("W_BLANK") is None and environment.positive_number("W_BLANK", 2.5) == 2.5


@pytest.mark.parametrize("name, value, read, message", [
    ("W_FLAG", "ture", environment.flag, "W_FLAG must be 1 or 0"),
    ("W_COUNT", "many", lambda n: environment.positive_int(n, 4), "W_COUNT must be a number"),
    ("W_COUNT", "-2", lambda n: environment.positive_int(n, 4), "W_COUNT must be positive"),
    ("W_COUNT", "2.5", lambda n: environment.positive_int(n, 4), "W_COUNT must be a whole number"),
])
def test_a_bad_value_is_said_with_its_name(monkeypatch, name, value, read, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        read(name)
