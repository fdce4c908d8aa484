"""Units as written in zdd.toml: durations ("250ms", "30s", "2m", "1h", or seconds) and sizes
("500MB", "2GB", "1.5GiB", or bytes); and the times Docker reports."""

import re
from datetime import datetime

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


def human_duration(seconds: float) -> str:
    """For log lines and errors: "250ms", "1.5s", "30s", "2m", "2m30s"."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{round(ms / 1000, 1):g}s"
    minutes, rest = divmod(round(ms / 1000), 60)
    return f"{minutes}m{rest}s" if rest else f"{minutes}m"


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Return bytes; raise ValueError with a reason a user can act on."""
    if isinstance(value, bool):
        raise ValueError(f'expected a size like "2GB", got {value!r}')
    if isinstance(value, int) and value >= 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f'expected a size like "500MB" or "2GB", got {value!r}')
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()])


def format_size(size: int) -> str:
    for unit, factor in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


def rfc3339_epoch(timestamp: str) -> float:
    """Docker's RFC 3339 time with nanoseconds ("2026-11-29T00:17:34.123456789Z") as epoch seconds."""
    try:
        return datetime.fromisoformat(timestamp[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return 0.0
