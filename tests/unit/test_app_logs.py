"""`zdd logs`: its arguments, and the output kept of a failed deploy's container."""

from datetime import datetime

import pytest

from zdd.app_logs import app_named, parse_since, parse_tail, pick_replica
from zdd.config import parse_config
from zdd.errors import RequestError
from zdd.failed_output import FailedOutput
from zdd.state import Replica, Running

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("10m", int(NOW - 600)),
        ("90s", int(NOW - 90)),
        ("2026-11-29T07:00:00+00:00", int(datetime.fromisoformat("2026-11-29T07:00:00+00:00").timestamp())),
    ],
)
def test_since_is_a_duration_ago_or_a_time(value, expected):
    assert parse_since(value, NOW) == expected


@pytest.mark.parametrize(("value", "problem"), [("yesterday", "--since 'yesterday': expected a duration like 10m")])
def test_a_since_that_is_neither_says_so(value, problem):
    with pytest.raises(RequestError, match=problem):
        parse_since(value, NOW)


@pytest.mark.parametrize(("value", "expected"), [("100", 100), ("0", 0), ("all", "all")])
def test_tail(value, expected):
    assert parse_tail(value) == expected


def test_a_bad_tail_says_so():
    with pytest.raises(RequestError, match="--tail 'ten': expected a number of lines or all"):
        parse_tail("ten")


@pytest.mark.parametrize(
    ("apps", "name", "result"),
    [
        (["web"], None, "web"),
        (["web", "api"], "api", "api"),
        (["web", "api"], None, RequestError("name the app: zdd logs APP \\(configured: web, api\\)")),
        (["web"], "db", RequestError("'db' is not a configured app \\(configured: web\\)")),
    ],
)
def test_which_app(apps, name, result):
    config = parse_config({"apps": {app: {"image": f"acme/{app}", "port": 80} for app in apps}})
    if isinstance(result, Exception):
        with pytest.raises(RequestError, match=str(result)):
            app_named(config, name, "logs")
    else:
        assert app_named(config, name, "logs") == result


def test_failed_output_is_kept_replaced_and_forgotten(tmp_path):
    kept = FailedOutput(tmp_path)
    assert kept.read("web") is None
    kept.keep("web", "first failure\n")
    kept.keep("web", "second failure\n")
    assert kept.read("web") == "second failure\n" and oct(kept.path("web").stat().st_mode & 0o777) == "0o640"
    kept.keep("web", "")
    assert kept.read("web") is None and list(kept.dir.iterdir()) == []


TWO = Running(
    "v2", "r/web:v2", "sha256:2", "c2", "zdd-web-d2", "10.0.0.2:8080", 0.0, [Replica("c3", "zdd-web-d2-2", "")]
)


@pytest.mark.parametrize(("number", "name"), [(1, "zdd-web-d2"), (2, "zdd-web-d2-2")])
def test_replica_picks_the_nth_container_of_the_live_version(number, name):
    assert pick_replica("web", TWO, number).container_name == name


@pytest.mark.parametrize("number", [0, 3, -1])
def test_a_replica_that_does_not_exist_says_how_many_there_are(number):
    with pytest.raises(RequestError, match=rf"--replica {number}: web runs 2 container\(s\) of v2 \(1..2\)"):
        pick_replica("web", TWO, number)
