"""The `zdd` command's one-line errors and exit codes where no dockerd or Caddy is needed (README's table).

The exit codes that need a running agent, Caddy and dockerd are in tests/integration/test_cli.py."""

import io
import os
import stat

import pytest

from tests.unit.test_config import MINIMAL
from zdd import cli
from zdd.docker_runtime import _unavailable

EXIT_FAILED = 1


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "zdd.toml"
    path.write_text(MINIMAL.replace('"/var/lib/zdd"', f'"{tmp_path / "state"}"'))
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback
    assert lines[0].startswith("zdd: ")
    return lines[0]


@pytest.mark.parametrize(
    "content, why",
    [
        (b"[apps.web\n", "not valid TOML"),
        (b"\xff\xfe garbage", "not UTF-8"),
        (b"apps = 3\n", "not in zdd's format"),
    ],
    ids=["not toml", "not utf-8", "wrong shape"],
)
@pytest.mark.parametrize("command", [["status"], ["history"]])
def test_a_damaged_state_file_is_one_line_naming_it_and_what_to_do(config_file, capsys, content, why, command):
    state = config_file.parent / "state"
    state.mkdir()
    (state / "state.toml").write_bytes(content)
    assert cli.main(["--config", str(config_file), *command]) == EXIT_FAILED
    line = one_error_line(capsys)
    assert f"state file {state / 'state.toml'} is {why}" in line
    assert f"mv {state / 'state.toml'} {state / 'state.toml'}.broken" in line


def test_deploy_without_a_state_dir_says_zdd_has_not_run_here(config_file, capsys):
    assert cli.main(["--config", str(config_file), "deploy", "v2"]) == EXIT_FAILED
    line = one_error_line(capsys)
    assert f"state dir {config_file.parent / 'state'} does not exist" in line and "zdd run" in line
    assert not (config_file.parent / "state").exists()  # nothing half-made


def test_run_creates_a_missing_state_dir_0750_before_the_agent_starts(config_file, monkeypatch):
    seen = {}

    class RecordingAgent:  # the real Agent needs dockerd: only what `zdd run` does before it matters here
        def __init__(self, config):
            seen["mode"] = stat.S_IMODE(config.state_dir.stat().st_mode)

        def run(self) -> int:
            return 0

    monkeypatch.setattr("zdd.daemon.Agent", RecordingAgent)
    monkeypatch.setattr("zdd.cli.setup_logging", lambda verbose: None)  # the agent's logging: not for tests
    mask = os.umask(0o022)  # systemd's default for services
    try:
        assert cli.main(["--config", str(config_file), "run"]) == 0
    finally:
        os.umask(mask)
    assert seen["mode"] == 0o750


@pytest.mark.parametrize(
    "docker_error, expected",
    [
        (
            "('Connection aborted.', PermissionError(13, 'Permission denied'))",
            "Docker engine: permission denied on its socket: user ",
        ),
        (
            "('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))",
            "Docker engine unavailable: ('Connection aborted.', FileNotFoundError",
        ),
    ],
    ids=["socket without permission", "no dockerd"],
)
def test_docker_socket_errors_say_what_to_do(docker_error, expected):
    message = str(_unavailable(Exception(docker_error)))
    assert message.startswith(expected)
    if "permission" in expected:
        assert "must be in group docker" in message and "then restart zdd" in message


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        (io.StringIO(), "web: v2: queued\nweb: v1 -> v2: health 1/3\nweb: v1 -> v2: draining v1 (2 in flight)\n"),
        (
            Terminal(),
            "\r\x1b[Kweb: v2: queued\r\x1b[Kweb: v1 -> v2: health 1/3"
            "\r\x1b[Kweb: v1 -> v2: draining v1 (2 in flight)\n",
        ),
    ],
    ids=["a line each when piped", "one line rewritten on a terminal"],
)
def test_deploy_wait_shows_each_step_once(out, expected):
    show = cli.StepDisplay(out)
    for step in (
        "web: v2: queued",
        "web: v1 -> v2: health 1/3",
        "web: v1 -> v2: health 1/3",
        "web: v1 -> v2: draining v1 (2 in flight)",
    ):
        show.step(step)
    show.done()
    assert out.getvalue() == expected
