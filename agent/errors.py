"""The kinds of failure zdd distinguishes; each message is meant to be read by an operator."""


class ZddError(Exception):
    """Base of every error zdd raises on purpose."""


class ConfigError(ZddError):
    """The configuration is invalid. Carries every problem found, one line each."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class RequestError(ZddError):
    """A queue entry or CLI argument that names nothing zdd may deploy."""


class TemporaryError(ZddError):
    """Something zdd depends on is unavailable right now (dockerd, Caddy, the registry)."""


class StopRequested(TemporaryError):
    """zdd is stopping in the middle of a step it does not cut short (a release command runs on): the
    deploy is queued again as it was, without counting as its one retry."""


class PermanentError(ZddError):
    """The deploy cannot succeed as asked (the tag does not exist, the new version is unhealthy)."""
