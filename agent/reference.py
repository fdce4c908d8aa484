"""Docker image references (the distribution/reference grammar) and what a queue line asks for.

Everything here is pure: no I/O, so it is cheap to test with tables and to fuzz.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import RequestError

# re.ASCII everywhere: \w must not accept unicode look-alikes such as "ｖ42" or "v４2".
_FLAGS = re.ASCII
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"

TAG_RE = re.compile(rf"^{_TAG}$", _FLAGS)
DIGEST_RE = re.compile(rf"^{_DIGEST}$", _FLAGS)
REFERENCE_RE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$", _FLAGS)
REPOSITORY_RE = re.compile(rf"^{_NAME}$", _FLAGS)
# An app name is a DNS label in its upstream name (routes.py): Go refuses one that ends in "-".
APP_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9_])?$", _FLAGS)

MAX_LINE = 512  # far above any real reference; longer lines are refused before any regex runs
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def normalize_repository(name: str) -> str:
    """ "nginx" and "docker.io/library/nginx" name the same repository; compare them equal."""
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain == "index.docker.io":
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    return f"{domain}/{path}"


def _check_digest(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    want = _DIGEST_LENGTHS.get(algorithm)
    if want is None:
        raise RequestError(f"unsupported digest algorithm {algorithm!r} (use sha256)")
    if len(hexpart) != want or hexpart != hexpart.lower():
        raise RequestError(f"malformed {algorithm} digest: expected {want} lowercase hex digits")
    return digest


@dataclass(frozen=True)
class ImageRef:
    """One image of an app's repository: a tag, a digest, or both."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def version(self) -> str:
        """What zdd calls this version in logs and state: the tag, else the short digest."""
        if self.tag and self.digest:
            return f"{self.tag}@{self.digest[:19]}"
        return self.tag or (self.digest or "")[:19]


@dataclass(frozen=True)
class DeployRequest:
    app: str
    ref: ImageRef
    line: str  # as written, for logs


def _repr_line(line: str) -> str:
    shown = line if len(line) <= 80 else line[:77] + "..."
    return repr(shown)


def _looks_like_digest(text: str) -> bool:
    return text.lstrip("@").partition(":")[0] in _DIGEST_LENGTHS and ":" in text


def parse_reference(text: str, repository: str) -> ImageRef:
    """Parse a bare tag, a bare digest or a full reference that must name `repository`."""
    if _looks_like_digest(text) and not DIGEST_RE.match(text.lstrip("@")):
        algorithm = text.lstrip("@").partition(":")[0]
        raise RequestError(f"malformed {algorithm} digest: expected {_DIGEST_LENGTHS[algorithm]} lowercase hex digits")
    if TAG_RE.match(text):
        return ImageRef(repository, tag=text)
    if text.startswith("@") and DIGEST_RE.match(text[1:]):
        return ImageRef(repository, digest=_check_digest(text[1:]))
    if DIGEST_RE.match(text):
        return ImageRef(repository, digest=_check_digest(text))
    match = REFERENCE_RE.match(text)
    if not match or len(match.group("name")) > 255:
        raise RequestError(f"{_repr_line(text)} is not a tag, a digest or an image reference")
    if normalize_repository(match.group("name")) != normalize_repository(repository):
        raise RequestError(f"{match.group('name')} is not this app's repository {repository}")
    digest = match.group("digest")
    tag = match.group("tag")
    if not tag and not digest:
        raise RequestError(f"{text} names no tag or digest")
    return ImageRef(repository, tag=tag, digest=_check_digest(digest) if digest else None)


def parse_request(line: str, repositories: Mapping[str, str]) -> DeployRequest:
    """Turn one queue line into a request for one app.

    `repositories` maps app name -> configured repository. A line is `REF` or `APP REF`.
    A bare tag needs exactly one configured app; a full reference picks the app by repository.
    """
    if not repositories:
        raise RequestError("no app is configured in zdd.toml; add an [apps.NAME] table first")
    if len(line) > MAX_LINE:
        raise RequestError(f"queue line of {len(line)} characters is too long (max {MAX_LINE})")
    if not line.isascii() or not line.isprintable():
        raise RequestError(f"{_repr_line(line)} contains non-printable or non-ASCII characters")
    words = line.split()
    if len(words) == 2:
        app, text = words
        if app not in repositories:
            raise RequestError(f"unknown app {app!r} (configured: {', '.join(sorted(repositories))})")
        return DeployRequest(app, parse_reference(text, repositories[app]), line)
    if len(words) != 1:
        raise RequestError(f"{_repr_line(line)}: expected TAG, REFERENCE or 'APP TAG'")
    text = words[0]
    is_bare = TAG_RE.match(text) or DIGEST_RE.match(text) or text.startswith("@") or _looks_like_digest(text)
    if is_bare:
        if len(repositories) != 1:
            raise RequestError(
                f"{_repr_line(text)} names no app and {len(repositories)} apps are configured; "
                "write 'APP TAG' (e.g. 'zdd deploy web v42')"
            )
        (app,) = repositories
        return DeployRequest(app, parse_reference(text, repositories[app]), line)
    match = REFERENCE_RE.match(text)
    if not match:
        raise RequestError(f"{_repr_line(text)} is not a tag, a digest or an image reference")
    wanted = normalize_repository(match.group("name"))
    apps = [name for name, repo in repositories.items() if normalize_repository(repo) == wanted]
    if not apps:
        raise RequestError(f"{match.group('name')} is not the repository of any configured app")
    if len(apps) > 1:
        raise RequestError(
            f"{match.group('name')} is the repository of apps {', '.join(sorted(apps))}; write 'APP REFERENCE'"
        )
    return DeployRequest(apps[0], parse_reference(text, repositories[apps[0]]), line)
