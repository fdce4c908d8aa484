"""Which deploy a log line belongs to, without passing it through every call: a context variable.

The daemon sets it around each deploy; the journald handler turns it into ZDD_APP, ZDD_TAG and
ZDD_DEPLOY_ID fields, so `journalctl ZDD_APP=web` is the app's deploy history.
"""

import contextlib
import contextvars
from collections.abc import Iterator

_current: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("zdd_deploy", default=None)


def fields() -> dict[str, str]:
    """The journal fields of the deploy in progress, or none."""
    return dict(_current.get() or {})


@contextlib.contextmanager
def deploy_context(app: str, tag: str, deploy_id: str) -> Iterator[None]:
    token = _current.set({"ZDD_APP": app, "ZDD_TAG": tag, "ZDD_DEPLOY_ID": deploy_id})
    try:
        yield
    finally:
        _current.reset(token)
