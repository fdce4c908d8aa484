"""Generated hostile input: the parser and the config loader never crash and never accept a foreign image."""

import random
import tomllib

import pytest

from tests.support.fuzz import REPO, hostile_lines
from zdd.config import load_config, parse_config
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


MINIMAL = 'state_dir = "/var/lib/zdd"\n[caddy]\nadmin = "127.0.0.1:2019"\n[apps.web]\nimage = "r/web"\nport = 8080\n'


def mutations(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    pieces = [
        'port = "x"',
        "port = -1",
        "port = 1e9",
        'image = ""',
        "image = 3",
        'health_path = "up"',
        "[apps.web.env]\nA = [1]",
        '[caddy]\nadmin = "8.8.8.8:2019"',
        'drain_timeout = "forever"',
        "[[apps]]",
        "apps = 3",
        "= 1",
        "[apps.web",
        'state_dir = "relative"',
        "\x00",
        'pull = "maybe"',
        'labels = { "zdd.app" = "x" }',
        "health_successes = 0",
        "stop_timeout = -5",
        '[apps."Bad Name"]',
    ]
    out = []
    for _ in range(count):
        lines = MINIMAL.splitlines()
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            if op == 0:
                lines.insert(rng.randrange(len(lines) + 1), rng.choice(pieces))
            elif op == 1 and lines:
                del lines[rng.randrange(len(lines))]
            elif lines:
                i = rng.randrange(len(lines))
                cut = rng.randrange(len(lines[i]) + 1)
                lines[i] = lines[i][:cut] + rng.choice(["", '"', "]", "=", "\\", "é"]) + lines[i][cut:]
        out.append("\n".join(lines) + "\n")
    return out


@pytest.mark.parametrize("seed", range(5))
def test_fuzzed_config_files_load_or_fail_with_named_problems(tmp_path, seed):
    path = tmp_path / "zdd.toml"
    for text in mutations(200, seed):
        path.write_text(text, encoding="utf-8")
        try:
            load_config(path)
        except ConfigError as err:
            assert err.problems and all(p.startswith(str(path)) and "\n" not in p[:200] for p in err.problems)


def test_fuzzed_parsed_documents_raise_only_config_errors():
    for text in mutations(500, 99):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            continue
        try:
            parse_config(data)
        except ConfigError:
            pass
