"""`zdd check`'s permission rule: can Caddy's user read a snippet where it lives?"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from zdd import check
from zdd.check import Who, may, unreadable_by
from zdd.config import parse_config

CADDY = Who(uid=4242, gids=frozenset({4242}))


@pytest.mark.parametrize(
    ("uid", "gid", "mode", "bit", "expected"),
    [
        (0, 0, 0o644, 4, True),  # others may read
        (0, 0, 0o640, 4, False),  # group root only
        (0, 4242, 0o640, 4, True),  # caddy's group
        (4242, 0, 0o600, 4, True),  # caddy's own
        (4242, 0, 0o066, 4, False),  # owner bits decide for the owner, even when others may
        (0, 0, 0o751, 1, True),  # a directory others may enter
        (0, 0, 0o750, 1, False),  # the 0750 state dir
    ],
)
def test_may(tmp_path, uid, gid, mode, bit, expected):
    path = tmp_path / "f"
    path.write_text("x")
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    assert may(CADDY, path.stat(), bit) is expected


@pytest.fixture
def open_dir():
    """A directory every user may enter (pytest's tmp_path lives in a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="zdd-check-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_a_snippet_inside_the_0750_state_dir_is_unreadable_and_says_where(open_dir):
    tmp_path = open_dir
    state = tmp_path / "state"
    (state / "caddy").mkdir(parents=True)
    snippet = state / "caddy" / "web.caddy"
    snippet.write_text("respond 503\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(state, 0o750)
    os.chmod(snippet, 0o644)
    why = unreadable_by(snippet, CADDY)
    assert why.startswith(f"cannot enter {state} (drwxr-x---")
    os.chmod(state, 0o755)
    assert unreadable_by(snippet, CADDY) is None
    os.chmod(snippet, 0o600)
    assert unreadable_by(snippet, CADDY).startswith("cannot read it (-rw-------")


def test_check_names_a_snippet_caddys_user_cannot_read(open_dir, monkeypatch):
    # The README's old trap: snippets inside the 0750 state dir, with Caddy running as the user caddy.
    state = open_dir / "state"
    (state / "caddy").mkdir(parents=True)
    (state / "caddy" / "web.caddy").write_text('respond "x"\n')
    os.chmod(state, 0o750)
    caddyfile = open_dir / "Caddyfile"
    caddyfile.write_text(f":80 {{\n\timport {state}/caddy/web.caddy\n}}\n")
    config = parse_config(
        {
            "state_dir": str(state),
            "caddy": {"caddyfile": str(caddyfile), "snippet_dir": str(state / "caddy"), "admin": "127.0.0.1:9"},
            "apps": {"web": {"image": "r/web", "port": 8080}},
        }
    )
    monkeypatch.setattr(check, "caddy_user", lambda: ("caddy", CADDY))
    problems = check.check_host(config)
    assert f"caddy.snippet_dir: user caddy, who runs Caddy, cannot enter {state} (drwxr-x---" in "\n".join(problems)
    os.chmod(state, 0o755)
    assert not [p for p in check.check_host(config) if p.startswith("caddy.snippet_dir")]


def test_check_docker_names_each_missing_network_with_its_app():
    config = parse_config(
        {
            "apps": {
                "web": {"image": "acme/web", "port": 8080, "networks": ["backend", "cache"]},
                "api": {"image": "acme/api", "port": 3000, "networks": ["backend"]},
                "static": {"image": "acme/static", "port": 80},
            }
        }
    )
    problems = check.check_docker(config, network_exists=lambda name: name == "backend", manages_swarm=lambda: False)
    assert problems == [
        "apps.web.networks: Docker network 'cache' does not exist; create it (docker network create cache) "
        "and attach the app's database to it"
    ]


def test_check_docker_says_when_a_swarm_app_s_engine_is_no_swarm_manager():
    apps = {"web": {"image": "acme/web", "port": 8080, "engine": "swarm"}}
    config = parse_config({"docker_host": "tcp://10.0.0.5:2375", "apps": apps})
    assert check.check_docker(config, network_exists=lambda name: True, manages_swarm=lambda: True) == []
    assert check.check_docker(config, network_exists=lambda name: True, manages_swarm=lambda: False) == [
        "apps.web.engine: the Docker engine at tcp://10.0.0.5:2375 is not a Swarm manager; "
        "run zdd on a manager node (docker swarm init, or docker node promote)"
    ]
