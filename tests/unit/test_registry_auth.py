"""Private registry logins from Docker's config.json: which registry an image needs, what the file may say."""

import base64
import json
from pathlib import Path

import pytest

from zdd.errors import ConfigError, PermanentError
from zdd.registry_auth import (
    Credentials,
    exposure,
    load_auths,
    login_for,
    parse_auths,
    refusal,
    refused,
    registry_of,
)

FILE = Path("/etc/zdd/registry-auth.json")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("repository", "registry"),
    [
        ("acme/web", "docker.io"),
        ("library/nginx", "docker.io"),
        ("nginx", "docker.io"),
        ("registry.example.com/acme/web", "registry.example.com"),
        ("127.0.0.1:5000/acme/web", "127.0.0.1:5000"),
        ("localhost/web", "localhost"),
        ("ghcr.io/acme/web", "ghcr.io"),
    ],
)
def test_registry_of_follows_dockers_rule(repository, registry):
    assert registry_of(repository) == registry


@pytest.mark.parametrize(
    ("auths", "registry", "expected"),
    [
        ({"registry.example.com": {"auth": b64("alice:s3cret")}}, "registry.example.com", ("alice", "s3cret")),
        ({"https://registry.example.com/v2/": {"auth": b64("bob:a:b")}}, "registry.example.com", ("bob", "a:b")),
        ({"https://index.docker.io/v1/": {"auth": b64("carol:pw")}}, "docker.io", ("carol", "pw")),
        ({"127.0.0.1:5000": {"username": "dave", "password": "pw"}}, "127.0.0.1:5000", ("dave", "pw")),
        ({"GHCR.io": {"auth": b64("erin:tok")}}, "ghcr.io", ("erin", "tok")),
    ],
)
def test_auths_in_the_forms_docker_login_writes(auths, registry, expected):
    found = parse_auths(json.dumps({"auths": auths}), FILE)
    assert (found[registry].username, found[registry].password) == expected


def test_an_identity_token_is_passed_as_docker_takes_it():
    found = parse_auths(json.dumps({"auths": {"reg.example.com": {"identitytoken": "tok"}}}), FILE)
    assert found["reg.example.com"].for_docker() == {"username": "<token>", "identitytoken": "tok"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "/etc/zdd/registry-auth.json: not valid JSON"),
        ("[]", 'expected a JSON object with "auths"'),
        ('{"auths": []}', '"auths" must be an object keyed by registry'),
        ('{"credsStore": "desktop", "auths": {}}', "credsStore/credHelpers are not supported"),
        ('{"auths": {"reg.example.com": {}}}', 'auths.reg.example.com: no "auth", "username"/"password"'),
        ('{"auths": {"reg.example.com": {"auth": "%%%"}}}', '"auth" is not base64 of user:password'),
        (json.dumps({"auths": {"r.example.com": {"auth": b64("nopass")}}}), "must be base64 of user:password"),
        ('{"auths": {"reg.example.com": "x"}}', 'expected an object with "auth"'),
    ],
)
def test_a_file_zdd_cannot_use_says_why(text, problem):
    with pytest.raises(ConfigError) as failure:
        parse_auths(text, FILE)
    assert any(problem in p for p in failure.value.problems), failure.value.problems


def test_the_secret_is_never_in_a_message():
    text = json.dumps({"auths": {"reg.example.com": {"auth": b64("alice:TOPSECRET")}, "bad.example.com": {}}})
    with pytest.raises(ConfigError) as failure:
        parse_auths(text, FILE)
    assert "TOPSECRET" not in str(failure.value) and b64("alice:TOPSECRET") not in str(failure.value)
    credentials = Credentials("reg.example.com", "alice", "TOPSECRET")
    assert "TOPSECRET" not in repr(credentials) and "TOPSECRET" not in f"{credentials}"


@pytest.mark.parametrize(
    ("message", "answer"),
    [
        ('Head "http://127.0.0.1:5000/v2/acme/web/manifests/v1": no basic auth credentials', "HTTP 401 Unauthorized"),
        ("unauthorized: authentication required", "HTTP 401 Unauthorized"),
        ("pull access denied for acme/web, repository does not exist", "access denied: a login this registry refuses"),
        ("manifest for acme/web:v9 not found: manifest unknown", None),
    ],
)
def test_refusal_names_the_http_answer(message, answer):
    assert refusal(message) == answer or (answer and refusal(message).startswith(answer))


@pytest.mark.parametrize(("mode", "exposed"), [(0o600, False), (0o400, False), (0o640, True), (0o644, True)])
def test_a_file_others_may_read_is_a_problem(tmp_path, mode, exposed):
    path = tmp_path / "registry-auth.json"
    path.write_text("{}")
    path.chmod(mode)
    assert (exposure(path) is not None) is exposed


def test_no_file_means_no_logins(tmp_path):
    assert load_auths(tmp_path / "absent.json") == {} and exposure(tmp_path / "absent.json") is None


def test_login_for_reads_the_file_at_every_use_and_names_what_it_was_for(tmp_path):
    path = tmp_path / "config.json"
    assert login_for(None, "reg.example.com/acme/web", "pull") is None  # no file configured
    assert login_for(path, "reg.example.com/acme/web", "pull") is None  # not written yet
    token = base64.b64encode(b"deployer:one").decode()
    path.write_text(json.dumps({"auths": {"reg.example.com": {"auth": token}}}))
    assert login_for(path, "reg.example.com/acme/web:v2@sha256:ab", "pull").password == "one"
    assert login_for(path, "other.example.com/acme/web", "pull") is None
    path.write_text("{")
    with pytest.raises(PermanentError, match=r"^reg.example.com/acme/web on the Swarm: registry credentials: "):
        login_for(path, "reg.example.com/acme/web", "reg.example.com/acme/web on the Swarm")


@pytest.mark.parametrize(
    ("login", "message", "expected"),
    [
        (None, "unauthorized: authentication required", "registry reg.example.com wants a login and FILE has none"),
        (
            Credentials("reg.example.com", "deployer", "x"),
            "unauthorized: authentication required",
            "registry reg.example.com refused user deployer from FILE (HTTP 401 Unauthorized: unauthorized:",
        ),
        (None, "manifest unknown", None),  # not a refusal: the caller says what it is
    ],
)
def test_refused_says_which_login_the_registry_turned_away(tmp_path, login, message, expected):
    path = tmp_path / "config.json"
    why = refused(path, "reg.example.com/acme/web", login, message)
    if expected is None:
        assert why is None
    else:
        assert why.startswith(expected.replace("FILE", str(path))), why
    if login is None and expected:
        assert refused(None, "reg.example.com/acme/web", None, message).startswith(
            "registry reg.example.com wants a login and no credentials file has none"
        )
