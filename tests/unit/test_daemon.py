"""The agent's composition: an error of any kind while converging keeps it up, says so, and is retried."""

import pytest

from zdd import daemon
from zdd.config import load_config, parse_config
from zdd.daemon import Agent
from zdd.errors import ConfigError, PermanentError, TemporaryError
from zdd.systemd import Notifier


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def send(self, message: str) -> None:
        self.sent.append(message)


class Converger:
    def __init__(self, error: Exception | None):
        self.error = error
        self.waiting: dict[str, str] = {}  # Swarm apps held up on their own

    def converge(self, apps):
        if self.error:
            raise self.error
        return []


@pytest.mark.parametrize(
    "error",
    [
        TemporaryError("Docker engine unavailable"),
        PermanentError("Caddy admin API POST /load: HTTP 400: an operator's unreloaded edit"),
        ConfigError("Caddyfile /etc/caddy/Caddyfile: Permission denied"),
    ],
    ids=["temporary", "permanent", "config"],
)
def test_any_zdd_error_while_converging_keeps_the_agent_up_and_in_status(tmp_path, error):
    config = parse_config({"state_dir": str(tmp_path / "state"), "apps": {"web": {"image": "r/web", "port": 8080}}})
    (tmp_path / "state").mkdir()
    notifier = RecordingNotifier()
    agent = Agent(config, notifier)
    agent.converger = Converger(error)
    agent.try_converge()  # issue 11.4: this used to escape run() for all but temporary errors
    assert not agent.converged
    assert notifier.sent[-1] == f"STATUS=waiting: {error}"
    agent.converger = Converger(None)
    agent.try_converge()
    assert agent.converged


def test_a_reload_that_adds_the_first_app_reaches_the_queue(tmp_path):
    # The README's path: install, then add [apps.web] and `systemctl reload zdd`; the queue must accept it.
    path = tmp_path / "zdd.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n')
    (tmp_path / "state").mkdir()
    agent = Agent(load_config(path), RecordingNotifier())
    assert agent.intake.repositories() == {}
    path.write_text(path.read_text() + '[apps.web]\nimage = "r/web"\nport = 8080\n')
    agent.reload_config()
    assert agent.intake.repositories() == {"web": "r/web"}
    assert agent.router.config.apps.keys() == {"web"} and agent.notifier.sent[-1] == "READY=1"


def test_a_reload_applies_admin_docker_host_and_network_and_refuses_to_move_the_state_or_snippets(
    tmp_path, caplog, monkeypatch
):
    # Issue 11.1: these keys were silently ignored by `systemctl reload zdd` until the next restart.
    path = tmp_path / "zdd.toml"
    base = f'state_dir = "{tmp_path / "state"}"\n[apps.web]\nimage = "r/web"\nport = 8080\n'
    path.write_text(base)
    (tmp_path / "state").mkdir()
    engines = []  # the Docker adapter each build made: (base_url, network)
    real = daemon.DockerRuntime
    monkeypatch.setattr(
        daemon, "DockerRuntime", lambda url, net, inst, auth: engines.append((url, net)) or real(url, net, inst, auth)
    )
    agent = Agent(load_config(path), RecordingNotifier())
    path.write_text(
        'network = "zdd-blue"\ndocker_host = "unix:///run/other-docker.sock"\n'
        + base
        + '[caddy]\nadmin = "127.0.0.1:2020"\n'
    )
    agent.reload_config()
    assert agent.router.admin.address == "127.0.0.1:2020"
    assert engines == [("unix:///var/run/docker.sock", "zdd"), ("unix:///run/other-docker.sock", "zdd-blue")]
    assert agent.docker.network == "zdd-blue"

    for moved, line in (
        ("caddy.snippet_dir", f'[caddy]\nsnippet_dir = "{tmp_path / "elsewhere"}"\n'),
        ("state_dir", None),
    ):
        text = base + line if line else base.replace('/state"', '/state2"')
        path.write_text(text)
        caplog.clear()
        agent.reload_config()
        # (moving state_dir moves the default snippet dir beside it too: both are named)
        assert "reload refused, keeping the running config: " in caplog.text and moved in caplog.text
        assert agent.config.snippet_dir == tmp_path / "state-caddy" and agent.config.state_dir == tmp_path / "state"
        assert agent.router.admin.address == "127.0.0.1:2020"  # the running config stays, whole
        assert agent.notifier.sent[-1] == "READY=1"


def test_a_reload_keeps_the_state_dir_given_on_the_command_line(tmp_path):
    path = tmp_path / "zdd.toml"
    path.write_text('state_dir = "/var/lib/zdd"\n[apps.web]\nimage = "r/web"\nport = 8080\n')
    (tmp_path / "state").mkdir()
    agent = Agent(load_config(path, state_dir=str(tmp_path / "state")), RecordingNotifier())
    path.write_text(path.read_text().replace("8080", "9090"))
    agent.reload_config()  # `zdd --state-dir DIR run`: DIR wins over the file, before and after the reload
    assert agent.config.state_dir == tmp_path / "state" and agent.config.apps["web"].port == 9090


def test_idle_status_says_which_swarm_app_waits_and_why():
    from zdd.config import AppConfig
    from zdd.heartbeat import idle_status
    from zdd.state import State

    apps = {"web": AppConfig(name="web", image="r/web", port=8080), "api": AppConfig(name="api", image="r/api", port=1)}
    text = idle_status(apps, State(), "", waiting={"api": "the Docker engine at docker_host is not a Swarm manager"})
    assert text == "idle; web not deployed, api waiting: the Docker engine at docker_host is not a Swarm manager"
