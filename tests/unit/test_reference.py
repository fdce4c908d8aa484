"""Queue lines and image references: what is accepted, for which app, and what is refused."""

import pytest

from zdd.errors import RequestError
from zdd.reference import ImageRef, normalize_repository, parse_request

REPO = "registry.example.com/acme/web"
ONE_APP = {"web": REPO}
TWO_APPS = {"web": REPO, "api": "registry.example.com/acme/api"}
DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "line, apps, app, tag, digest",
    [
        ("v42", ONE_APP, "web", "v42", None),
        ("  v42  ", ONE_APP, "web", "v42", None),
        ("1.2.3-rc_1", ONE_APP, "web", "1.2.3-rc_1", None),
        ("latest", ONE_APP, "web", "latest", None),
        (DIGEST, ONE_APP, "web", None, DIGEST),
        ("@" + DIGEST, ONE_APP, "web", None, DIGEST),
        (f"{REPO}:v42", ONE_APP, "web", "v42", None),
        (f"{REPO}@{DIGEST}", ONE_APP, "web", None, DIGEST),
        (f"{REPO}:v42@{DIGEST}", ONE_APP, "web", "v42", DIGEST),
        ("web v42", TWO_APPS, "web", "v42", None),
        ("api v7", TWO_APPS, "api", "v7", None),
        ("registry.example.com/acme/api:v7", TWO_APPS, "api", "v7", None),
        ("web registry.example.com/acme/web:v42", TWO_APPS, "web", "v42", None),
    ],
)
def test_accepted(line, apps, app, tag, digest):
    request = parse_request(line, apps)
    assert (request.app, request.ref.tag, request.ref.digest) == (app, tag, digest)
    assert request.ref.repository == apps[app]


@pytest.mark.parametrize(
    "line, apps, message",
    [
        ("v42", TWO_APPS, "names no app and 2 apps are configured; write 'APP TAG'"),
        ("v42", {}, "no app is configured in zdd.toml"),
        ("docker.io/library/nginx:1.25", ONE_APP, "not the repository of any configured app"),
        ("registry.evil.com/acme/web:v42", ONE_APP, "not the repository of any configured app"),
        ("web registry.evil.com/acme/web:v42", ONE_APP, "is not this app's repository"),
        ("db v1", TWO_APPS, "unknown app 'db'"),
        ("../../etc/passwd", ONE_APP, "is not a tag, a digest or an image reference"),
        ("v1; rm -rf /", ONE_APP, "expected TAG, REFERENCE or 'APP TAG'"),
        ("$(reboot)", ONE_APP, "is not a tag, a digest or an image reference"),
        ("v1 v2 v3", ONE_APP, "expected TAG, REFERENCE or 'APP TAG'"),
        ("sha256:abc", ONE_APP, "malformed sha256 digest"),
        ("@sha256:abc", ONE_APP, "malformed sha256 digest"),
        ("sha256:" + "A" * 64, ONE_APP, "64 lowercase hex digits"),
        ("md5:" + "a" * 32, ONE_APP, "unsupported digest algorithm 'md5'"),
        ("ｖ42", ONE_APP, "non-ASCII"),
        ("v\x0042", ONE_APP, "non-printable"),
        ("-v42", ONE_APP, "is not a tag"),
        ("v" * 129, ONE_APP, "is not the repository of any configured app"),
        ("x" * 600, ONE_APP, "too long"),
        (f"{REPO}", ONE_APP, "names no tag or digest"),
        ("REGISTRY.example.com/Acme/web:v1", ONE_APP, "is not a tag, a digest or an image reference"),
    ],
)
def test_refused(line, apps, message):
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        parse_request(line, apps)


@pytest.mark.parametrize(
    "name, normalized",
    [
        ("nginx", "docker.io/library/nginx"),
        ("library/nginx", "docker.io/library/nginx"),
        ("docker.io/nginx", "docker.io/library/nginx"),
        ("index.docker.io/library/nginx", "docker.io/library/nginx"),
        ("acme/web", "docker.io/acme/web"),
        ("localhost/web", "localhost/web"),
        ("127.0.0.1:5000/acme/web", "127.0.0.1:5000/acme/web"),
    ],
)
def test_normalize_repository(name, normalized):
    assert normalize_repository(name) == normalized


def test_docker_hub_spellings_name_the_same_app():
    request = parse_request("docker.io/library/nginx:1.25", {"proxy": "nginx"})
    assert request.app == "proxy" and str(request.ref) == "nginx:1.25"


@pytest.mark.parametrize(
    "ref, text, version",
    [
        (ImageRef("r/web", tag="v1"), "r/web:v1", "v1"),
        (ImageRef("r/web", digest=DIGEST), f"r/web@{DIGEST}", DIGEST[:19]),
        (ImageRef("r/web", tag="v1", digest=DIGEST), f"r/web:v1@{DIGEST}", f"v1@{DIGEST[:19]}"),
    ],
)
def test_image_ref_text(ref, text, version):
    assert (str(ref), ref.version) == (text, version)
