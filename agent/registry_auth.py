"""Credentials for private registries, read from a file in Docker's own `config.json` format.

Users already have that file from `docker login`; zdd reads only its `auths` (no credential helpers: the
agent runs unattended, as its own user). It is read at every pull, so a rotated password needs no reload.
Nothing here ever puts a secret into a message.
"""

import base64
import binascii
import json
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, PermanentError

DOCKER_HUB = "docker.io"
# The names `docker login` has written for Docker Hub over the years.
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


@dataclass(frozen=True)
class Credentials:
    registry: str
    username: str
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:  # a traceback or a debug log must not show the secret
        return f"Credentials(registry={self.registry!r}, username={self.username!r}, secret=***)"

    def for_docker(self) -> dict[str, str]:
        """docker-py's auth_config."""
        if self.identity_token:
            return {"username": self.username or "<token>", "identitytoken": self.identity_token}
        return {"username": self.username, "password": self.password}

    @property
    def who(self) -> str:
        return f"user {self.username}" if self.username else "an identity token"


def registry_of(repository: str) -> str:
    """The registry host of an image repository, by Docker's rule: the first path component if it looks
    like a host (has a dot or a port, or is localhost), else Docker Hub."""
    first, sep, _ = repository.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return _registry_key(first)  # as the file's keys are read: lowercase, Docker Hub's aliases as one
    return DOCKER_HUB


def _registry_key(key: str) -> str:
    """`https://index.docker.io/v1/`, `https://reg.example.com`, `reg.example.com` -> the host."""
    host = key.split("://", 1)[-1].split("/", 1)[0].lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def parse_auths(text: str, source: Path) -> dict[str, Credentials]:
    """Docker's config.json -> credentials by registry host. Raises ConfigError naming the file and entry."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{source}: not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise ConfigError(f'{source}: expected a JSON object with "auths", as docker login writes')
    problems = []
    if document.get("credsStore") or document.get("credHelpers"):
        problems.append(
            f"{source}: credsStore/credHelpers are not supported (zdd runs unattended, with no helper); "
            "write the login into the file itself: DOCKER_CONFIG=DIR docker login REGISTRY on a machine with no "
            "credential helper, then copy DIR/config.json"
        )
    auths = document.get("auths", {})
    if not isinstance(auths, dict):
        problems.append(f'{source}: "auths" must be an object keyed by registry')
        auths = {}
    found = {}
    for key, entry in auths.items():
        registry = _registry_key(key)
        try:
            found[registry] = _credentials(registry, entry)
        except ValueError as err:
            problems.append(f"{source}: auths.{key}: {err}")
    if problems:
        raise ConfigError(problems)
    return found


def _credentials(registry: str, entry: object) -> Credentials:
    if not isinstance(entry, dict):
        raise ValueError('expected an object with "auth" (base64 of user:password)')
    if entry.get("identitytoken"):
        return Credentials(registry, str(entry.get("username", "")), identity_token=str(entry["identitytoken"]))
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError('"auth" is not base64 of user:password') from None
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            raise ValueError('"auth" must be base64 of user:password')
        return Credentials(registry, username, password)
    if entry.get("username") and entry.get("password"):
        return Credentials(registry, str(entry["username"]), str(entry["password"]))
    raise ValueError('no "auth", "username"/"password" or "identitytoken" in it')


def load_auths(path: Path) -> dict[str, Credentials]:
    """The file's credentials; none when it does not exist (public registries need none)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    return parse_auths(text, path)


def refusal(message: str) -> str | None:
    """The HTTP answer behind Docker's words for a refused login, if they say one."""
    lowered = message.lower()
    if "no basic auth credentials" in lowered or "unauthorized" in lowered or "authentication required" in lowered:
        return "HTTP 401 Unauthorized"
    if "denied" in lowered:  # Docker Hub says so for a repository that does not exist, too
        return "access denied: a login this registry refuses, or no such repository"
    return None


def exposure(path: Path) -> str | None:
    """Why the file's mode lets more than its owner read it (it holds passwords), else None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (
            f"{path} is {stat.filemode(mode)}: registry passwords readable by others; "
            f"chown zdd {path} && chmod 0600 {path} (the agent runs as user zdd)"
        )
    return None


def login_for(path: Path | None, repository: str, what: str) -> Credentials | None:
    """The file's login for the repository's registry, read at every use: a rotated password is used from
    the next deploy on, with no reload. `what` starts the error of a file that cannot be used."""
    if path is None:
        return None
    try:
        return load_auths(path).get(registry_of(repository))
    except ConfigError as err:
        raise PermanentError(f"{what}: registry credentials: {err}") from None


def refused(path: Path | None, repository: str, login: Credentials | None, message: str) -> str | None:
    """What a registry's refusal means for this login ("registry R refused user U from FILE (...)"), or
    None when Docker's message is not a refusal."""
    answer = refusal(message)
    if answer is None:
        return None
    registry = registry_of(repository)
    if login:
        why = f"refused {login.who} from {path}"
    else:
        why = f"wants a login and {path or 'no credentials file'} has none for {registry}"
    return f"registry {registry} {why} ({answer}: {message})"
