"""Generated hostile input: the parser and the config loader never crash and never accept a foreign image."""

import tomllib

import pytest

from tests.support.fuzz import REPO, hostile_lines, mutations
from zdd.config import check_admin_address, load_config, parse_config
from zdd.errors import ConfigError, RequestError
from zdd.reference import normalize_repository, parse_request

APPS = {"web": REPO}


def test_two_thousand_hostile_queue_lines_are_refused_or_name_the_configured_repository():
    accepted = 0
    for line in hostile_lines(2000):
        try:
            request = parse_request(line.strip(), APPS)
        except RequestError as err:
            message = str(err)
            assert message and "\n" not in message and len(message) < 400, repr(message)
            continue
        accepted += 1
        assert request.app == "web"
        assert normalize_repository(request.ref.repository) == normalize_repository(REPO)
        assert request.ref.tag or request.ref.digest
        assert all(c.isascii() and c.isprintable() for c in str(request.ref))
        assert parse_request(str(request.ref), APPS).ref == request.ref  # what zdd deploys re-parses the same
    assert 0 < accepted < 2000


@pytest.mark.parametrize("seed", range(5))
def test_fuzzed_config_files_load_or_fail_with_named_problems(tmp_path, seed):
    path = tmp_path / "zdd.toml"
    for text in mutations(200, seed):
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError as err:
            assert err.problems and all(p.startswith(str(path)) and "\n" not in p[:200] for p in err.problems)


def test_fuzzed_parsed_documents_are_accepted_whole_or_refused_with_named_problems():
    accepted = refused = 0
    for text in mutations(500, 99):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            continue
        try:
            config = parse_config(data)
        except ConfigError as err:
            refused += 1
            assert err.problems and all(": " in p and "\n" not in p for p in err.problems), err.problems
            continue
        accepted += 1
        for app in config.apps.values():  # what is accepted is valid, whatever the mutation was
            assert 1 <= app.port <= 65535 and app.image and app.health_path.startswith("/")
            assert app.pull in ("missing", "always", "never") and app.health_successes >= 1
            assert not any(key.startswith("zdd.") for key in app.labels)
        assert check_admin_address(config.caddy.admin) and config.state_dir.is_absolute()
    assert accepted > 10 and refused > 100, (accepted, refused)
