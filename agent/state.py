"""zdd's memory: what runs for each app, the phase of a deploy in progress, and the deploy history.

One TOML file, replaced atomically (temp file, fsync, rename, fsync of the directory), so a crash
leaves either the old or the new state, never half of one.
"""

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomli_w

from . import __version__
from .errors import PermanentError

HISTORY_LIMIT = 200  # deploys kept in state.toml; the journal keeps the rest


@dataclass(frozen=True)
class Replica:
    """One container of a version (an app with `replicas = N` runs N of them)."""

    container_id: str
    container_name: str
    address: str  # ip:port Caddy dials


@dataclass
class Running:
    """The containers that serve an app: the first one's fields, and `more` when it runs several."""

    tag: str  # the version as zdd names it (tag or short digest)
    reference: str  # the full reference it was deployed from
    image_id: str
    container_id: str
    container_name: str
    address: str  # ip:port Caddy dials
    since: float  # epoch seconds
    more: list[Replica] = field(default_factory=list)  # replicas 2..N of the same version

    @property
    def replicas(self) -> list[Replica]:
        return [Replica(self.container_id, self.container_name, self.address), *self.more]

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.replicas]

    @property
    def names(self) -> str:
        """Its containers' names, for logs: `zdd-web-d12` or `zdd-web-d12, zdd-web-d12-2`."""
        return ", ".join(r.container_name for r in self.replicas)

    def with_replicas(self, replicas: list[Replica]) -> "Running":
        """The same version on these containers (the first one's fields, the rest in `more`)."""
        first, *more = replicas
        return replace(
            self, container_id=first.container_id, container_name=first.container_name, address=first.address, more=more
        )


def encode_replicas(replicas: list[Replica]) -> str:
    """Replicas as one string for the phase journal (whose values are strings): `id,name,ip:port ...`."""
    return " ".join(f"{r.container_id},{r.container_name},{r.address}" for r in replicas)


def decode_replicas(text: str) -> list[Replica]:
    return [Replica(*item.split(",", 2)) for item in text.split()]


@dataclass
class AppState:
    current: Running | None = None
    previous_tag: str = ""
    previous_reference: str = ""
    # The phase journal: written before each step of a deploy so a restart can finish or undo it.
    phase: str = ""
    phase_data: dict[str, str] = field(default_factory=dict)


@dataclass
class HistoryEntry:
    deploy_id: str
    app: str
    tag: str
    reference: str
    requested_at: float
    started_at: float = 0.0
    ended_at: float = 0.0
    result: str = ""  # succeeded | failed | unchanged | superseded | rejected
    reason: str = ""
    image_id: str = ""
    from_tag: str = ""
    requested_by: int = -1  # uid of the queue file's writer, when known
    attempts: int = 0  # starts interrupted by a crash; retried once
    image_pruned: bool = False  # its image was removed (or found gone) after later deploys


@dataclass
class State:
    # This agent's own mark on its containers: another zdd on the same engine (a second state dir) never
    # sees, and so never removes, them.
    instance: str = ""
    apps: dict[str, AppState] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    queue_offsets: dict[str, int] = field(default_factory=dict)  # claimed file -> bytes already taken

    def app(self, name: str) -> AppState:
        return self.apps.setdefault(name, AppState())

    def record(self, entry: HistoryEntry) -> None:
        """Add or replace (by deploy id) a history entry, keeping the newest HISTORY_LIMIT."""
        self.history = [e for e in self.history if e.deploy_id != entry.deploy_id]
        self.history.append(entry)
        del self.history[:-HISTORY_LIMIT]


def _drop_empty(value: Any) -> Any:
    # TOML has no null: leave out what is None.
    if isinstance(value, dict):
        return {k: _drop_empty(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def _running(raw: dict[str, Any]) -> Running:
    return _build(Running, {**raw, "more": [_build(Replica, r) for r in raw.get("more", [])]})


def state_from_dict(data: dict[str, Any]) -> State:
    apps = {}
    for name, raw in data.get("apps", {}).items():
        current = _running(raw["current"]) if "current" in raw else None
        apps[name] = _build(AppState, {**raw, "current": current})
    history = [_build(HistoryEntry, raw) for raw in data.get("history", [])]
    return State(
        instance=data.get("instance", ""), apps=apps, history=history, queue_offsets=dict(data.get("queue_offsets", {}))
    )


def write_atomically(path: Path, data: bytes, mode: int = 0o640) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # umask must not decide who may read it
        try:  # the directory's group (zdd) may read it: `zdd status` and `deploy --wait` for deployers
            os.fchown(fd, -1, os.stat(path.parent).st_gid)
        except PermissionError:
            pass
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# state.toml's layout. 0: zdd 0.1.0 as first released (no `format` key); 1: the key is written. A newer zdd
# reads every older format (tests/unit/test_state.py loads a file an earlier release wrote); an older zdd
# refuses a newer format rather than misread it. 2: some version runs on several containers (`more`), which
# an older zdd would take for leftovers and remove; a state without replicas is still written as 1, so
# going back to the earlier release stays possible until an app uses them.
STATE_FORMAT = 2


def written_format(state: State) -> int:
    replicas = any((a.current is not None and a.current.more) or a.phase_data.get("more") for a in state.apps.values())
    return STATE_FORMAT if replicas else 1


class StateStore:
    """Reads and writes <state_dir>/state.toml."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / "state.toml"

    def load(self) -> State:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return State()
        except UnicodeDecodeError as err:
            raise self._unreadable(f"not UTF-8 ({err.reason})") from err
        try:
            data = tomllib.loads(text)
            written = data.get("format", 0)
            if not isinstance(written, int) or isinstance(written, bool) or written < 0:
                raise self._unreadable(f"not in zdd's format (format = {written!r})")
            if written > STATE_FORMAT:
                raise PermanentError(
                    f"state file {self.path} was written by a newer zdd (format {written}; zdd {__version__} reads "
                    f"up to {STATE_FORMAT}): install the newer zdd again"
                )
            return state_from_dict(data)
        except tomllib.TOMLDecodeError as err:
            raise self._unreadable(f"not valid TOML ({err})") from err
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise self._unreadable(f"not in zdd's format ({type(err).__name__}: {err})") from err

    def _unreadable(self, why: str) -> PermanentError:
        return PermanentError(
            f"state file {self.path} is {why}; it was edited or damaged: restore it, or move it aside "
            f"(mv {self.path} {self.path}.broken) and start zdd again"
        )

    def save(self, state: State) -> None:
        document = {"format": written_format(state), **_drop_empty(asdict(state))}
        write_atomically(self.path, tomli_w.dumps(document).encode())
