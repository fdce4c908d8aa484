"""Durations as written in zdd.toml: "250ms", "30s", "2m", "1h", or a plain number of seconds."""

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: object) -> float:
    """Return seconds; raise ValueError with a reason a user can act on."""
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "30s", got {value!r}')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f'expected a duration like "500ms", "30s" or "2m", got {value!r}')
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f'expected a duration like "30s", got {type(value).__name__}')
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse, for Caddy and for humans: whole milliseconds."""
    return f"{max(0, round(seconds * 1000))}ms"
