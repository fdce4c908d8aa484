"""zdd.toml validation: each problem names its key; the minimal file from the README works."""

import tomllib
from pathlib import Path

import pytest

from zdd.config import HealthCheck, load_config, parse_config
from zdd.errors import ConfigError
from zdd.units import format_duration, human_duration, parse_duration, parse_size

MINIMAL = """
state_dir = "/var/lib/zdd"

[caddy]
admin = "127.0.0.1:2019"
caddyfile = "/etc/caddy/Caddyfile"

[apps.web]
image = "registry.example.com/acme/web"
port = 8080
health_path = "/up"
"""


def with_app(**keys) -> dict:
    data = tomllib.loads(MINIMAL)
    data["apps"]["web"].update(keys)
    return data


def test_an_app_on_a_swarm():
    app = parse_config(with_app(engine="swarm", swarm_ports=[8001, 8002], replicas=3)).apps["web"]
    assert (app.engine, app.swarm_ports, app.replicas) == ("swarm", (8001, 8002), 3)
    assert parse_config(with_app(engine="swarm")).apps["web"].swarm_ports == (18301, 18302)
    assert parse_config(with_app()).apps["web"].engine == "local"


def test_minimal_config_from_the_readme():
    config = parse_config(tomllib.loads(MINIMAL))
    app = config.apps["web"]
    assert (app.image, app.port, app.health_path, app.pull) == ("registry.example.com/acme/web", 8080, "/up", "missing")
    assert config.queue_path == Path("/var/lib/zdd/queue")
    assert config.snippet_path("web") == Path("/var/lib/zdd-caddy/web.caddy")  # the package's, readable by Caddy


@pytest.mark.parametrize(
    ("state_dir", "snippet_dir", "expected"),
    [
        ("/var/lib/zdd", None, "/var/lib/zdd-caddy/web.caddy"),  # beside the 0750 state dir
        ("/srv/zdd/state", None, "/srv/zdd/state-caddy/web.caddy"),
        ("/var/lib/zdd", "/etc/caddy/zdd", "/etc/caddy/zdd/web.caddy"),
    ],
)
def test_snippet_dir_defaults_to_beside_the_state_dir_and_can_move(state_dir, snippet_dir, expected):
    data = tomllib.loads(MINIMAL)
    data["state_dir"] = state_dir
    if snippet_dir:
        data["caddy"]["snippet_dir"] = snippet_dir
    assert parse_config(data).snippet_path("web") == Path(expected)


def test_durations_and_optional_keys():
    app = parse_config(
        with_app(
            health_interval="250ms",
            start_timeout="2m",
            drain_timeout=5,
            stop_timeout="1.5s",
            env={"A": "1", "B": 2},
            volumes=["/srv/data:/data:ro"],
            pull="always",
            command=["httpd", "-f"],
            probation="0s",
            keep_images=0,
        )
    ).apps["web"]
    assert (app.health_interval, app.start_timeout, app.drain_timeout, app.stop_timeout) == (0.25, 120, 5, 1.5)
    assert (app.probation, app.keep_images) == (0, 0)
    assert app.env == {"A": "1", "B": "2"} and app.volumes == ("/srv/data:/data:ro",) and app.pull == "always"


@pytest.mark.parametrize(
    "keys, problem",
    [
        ({"port": 0}, "apps.web.port: port 0 is out of range 1-65535"),
        ({"port": 70000}, "apps.web.port: port 70000 is out of range"),
        ({"port": "8080"}, "apps.web.port: expected an integer, got a string"),
        ({"port": True}, "apps.web.port: expected an integer, got a boolean"),
        ({"drain_timeout": "soon"}, "apps.web.drain_timeout: expected a duration like"),
        ({"drain_timeout": "-3s"}, "apps.web.drain_timeout: expected a duration like"),
        ({"health_interval": "0s"}, "apps.web.health_interval: must be more than 0"),
        ({"health_successes": 0}, "apps.web.health_successes: must be at least 1"),
        ({"probation": "a while"}, "apps.web.probation: expected a duration like"),
        ({"keep_images": -1}, "apps.web.keep_images: must be 0 or more, got -1"),
        ({"keep_images": "3"}, "apps.web.keep_images: expected an integer, got a string"),
        ({"health_path": "up"}, "apps.web.health_path: 'up' must be a URL path starting with /"),
        ({"pull": "sometimes"}, "apps.web.pull: 'sometimes' is not one of missing, always, never"),
        ({"image": "registry.example.com/acme/web:v1"}, "must be a repository without tag or digest"),
        ({"image": "Not A Repo"}, "is not a valid image repository"),
        ({"colour": "blue"}, "apps.web.colour: unknown key"),
        ({"env": {"A": [1]}}, "apps.web.env: values must be strings or numbers"),
        ({"env_file": "relative.env"}, "apps.web.env_file: 'relative.env' must be an absolute path"),
        ({"labels": {"zdd.app": "x"}}, "apps.web.labels: keys starting with 'zdd.' are zdd's own"),
        ({"health_host": "http://example.com"}, "apps.web.health_host: 'http://example.com' must be a host name"),
        ({"health_host": "a b"}, "apps.web.health_host: 'a b' must be a host name"),
        ({"health_status": []}, "apps.web.health_status: expected a non-empty list of HTTP status codes"),
        ({"health_status": ["200"]}, "apps.web.health_status: expected a non-empty list of HTTP status codes"),
        ({"health_status": [200, 600]}, "apps.web.health_status: 600: HTTP status codes are 100-599"),
        ({"health_status": 200}, "apps.web.health_status: expected a list, got an integer"),
        ({"networks": "backend"}, "apps.web.networks: expected a list, got a string"),
        ({"networks": ["back end"]}, "apps.web.networks: 'back end': not a Docker network name"),
        ({"networks": ["db", "db"]}, "apps.web.networks: a network is named twice"),
        ({"networks": ["zdd"]}, "apps.web.networks: 'zdd' is zdd's own network"),
        ({"memory": "lots"}, "apps.web.memory: expected a size like"),
        ({"memory": "1MB"}, "apps.web.memory: '1MB' is below Docker's minimum of 6MiB"),
        ({"cpus": 0}, "apps.web.cpus: expected a number of CPUs above 0, like 1.5, got 0"),
        ({"cpus": "2"}, "apps.web.cpus: expected a number of CPUs above 0"),
        ({"cpus": True}, "apps.web.cpus: expected a number of CPUs above 0"),
        ({"pids_limit": 0}, "apps.web.pids_limit: must be at least 1, got 0"),
        ({"replicas": 0}, "apps.web.replicas: must be 1 to 16"),
        ({"replicas": 17}, "apps.web.replicas: must be 1 to 16"),
        ({"replicas": "2"}, "apps.web.replicas: expected"),
        ({"release_command": []}, "apps.web.release_command: expected a command: a list like"),
        ({"release_command": "  "}, "apps.web.release_command: expected a command"),
        ({"release_command": ["a", 1]}, "apps.web.release_command: expected a command"),
        ({"release_timeout": "forever"}, "apps.web.release_timeout: expected a duration like"),
        ({"engine": "k8s"}, "apps.web.engine: must be one of local, swarm, got 'k8s'"),
        ({"engine": "swarm", "swarm_ports": [8001]}, "apps.web.swarm_ports: expected two port numbers"),
        ({"engine": "swarm", "swarm_ports": [8001, "8002"]}, "apps.web.swarm_ports: expected two port numbers"),
        ({"engine": "swarm", "swarm_ports": [8001, 8001]}, "apps.web.swarm_ports: the two ports must differ"),
        ({"engine": "swarm", "swarm_ports": [8001, 0]}, "apps.web.swarm_ports: port 0 is out of range"),
        ({"swarm_ports": [8001, 8002]}, 'apps.web.swarm_ports: only for engine = "swarm"'),
        (
            {"engine": "swarm", "release_command": ["rake"]},
            'apps.web.release_command: not supported with engine = "swarm"',
        ),
        ({"engine": "swarm", "volumes": ["/srv:/srv"]}, "apps.web.volumes: not supported with engine"),
        ({"engine": "swarm", "networks": ["db"]}, "apps.web.networks: not supported with engine"),
        ({"engine": "swarm", "env_file": "/etc/web.env"}, "apps.web.env_file: not supported with engine"),
    ],
)
def test_app_problems_name_their_key(keys, problem):
    with pytest.raises(ConfigError) as failure:
        parse_config(with_app(**keys))
    assert any(problem in p for p in failure.value.problems), failure.value.problems


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            {},
            {
                "health_host": None,
                "health_status": (),
                "networks": (),
                "memory": None,
                "cpus": None,
                "pids_limit": None,
            },
        ),
        (
            {"health_host": "example.com", "health_status": [200, 301]},
            {"health_host": "example.com", "health_status": (200, 301)},
        ),
        ({"health_host": "app.test:3000"}, {"health_host": "app.test:3000"}),
        ({"networks": ["backend", "cache_net"]}, {"networks": ("backend", "cache_net")}),
        (
            {"memory": "512MiB", "cpus": 1.5, "pids_limit": 200},
            {"memory": 512 * 1024**2, "cpus": 1.5, "pids_limit": 200},
        ),
        ({"memory": 64_000_000, "cpus": 2}, {"memory": 64_000_000, "cpus": 2.0}),
        ({}, {"release_command": (), "release_timeout": 300.0}),
        ({"release_command": ["bin/rails", "db:migrate"]}, {"release_command": ("bin/rails", "db:migrate")}),
        (
            {"release_command": "rake db:migrate && rake assets:upload"},
            {"release_command": ("/bin/sh", "-c", "rake db:migrate && rake assets:upload")},
        ),
        ({"release_timeout": "10m"}, {"release_timeout": 600.0}),
        ({}, {"replicas": 1}),
        ({"replicas": 3}, {"replicas": 3}),
    ],
)
def test_health_networks_and_limits(keys, expected):
    app = parse_config(with_app(**keys)).apps["web"]
    assert {key: getattr(app, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("statuses", "status", "healthy"),
    [
        ((), 200, True),
        ((), 204, True),
        ((), 301, False),
        ((), 500, False),
        ((200, 301), 301, True),
        ((301,), 200, False),
    ],
)
def test_which_answers_are_healthy(statuses, status, healthy):
    assert HealthCheck("/up", 2.0, None, statuses).accepts(status) is healthy


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda d: d["apps"]["web"].pop("image"), "apps.web.image: missing"),
        (lambda d: d["apps"]["web"].pop("port"), "apps.web.port: missing"),
        (lambda d: d.update(colour=1), "colour: unknown key"),
        (lambda d: d["caddy"].update(admin="10.1.2.3:2019"), "is not on loopback"),
        (lambda d: d["caddy"].update(admin="example.com:2019"), "is not on loopback"),
        (lambda d: d["caddy"].update(admin="unix/run/caddy.sock"), "unix//absolute/path"),
        (lambda d: d.update(state_dir="var/lib/zdd"), "state_dir: 'var/lib/zdd' must be an absolute path"),
        (lambda d: d["apps"].update({"Web!": {"image": "x", "port": 1}}), "apps.Web!: app names are lowercase"),
        (lambda d: d["apps"].update(api=3), "apps.api: expected a table, got an integer"),
        # An app name is a DNS label in its upstream name: Go's resolver refuses one that ends in "-".
        (lambda d: d["apps"].update({"web-": {"image": "x", "port": 1}}), "apps.web-: app names are lowercase"),
        (lambda d: d["caddy"].update(resolver="localhost:5354"), "caddy.resolver: 'localhost:5354' must be IP:PORT"),
        (lambda d: d["caddy"].update(resolver="10.0.0.1:53"), "caddy.resolver: '10.0.0.1:53' is not on loopback"),
        (
            lambda d: d.update(notify={"webhook": "hooks.example.com/x"}),
            "notify.webhook: 'hooks.example.com/x' must be",
        ),
        (lambda d: d.update(notify={"command": []}), "notify.command: expected a command"),
        (lambda d: d.update(notify={"colour": 1}), "notify.colour: unknown key"),
        (lambda d: d.update(notify={"webhook_attempts": 0}), "notify.webhook_attempts: must be at least 1"),
        (lambda d: d.update(metrics_textfile="/var/lib/node-exporter/zdd.txt"), "only files named *.prom"),
        (lambda d: d.update(registry_auth="auth.json"), "registry_auth: 'auth.json' must be an absolute path"),
        (
            lambda d: d["apps"].update(
                web={**d["apps"]["web"], "engine": "swarm", "swarm_ports": [8001, 8002]},
                api={"image": "x", "port": 1, "engine": "swarm", "swarm_ports": [8002, 8003]},
            ),
            "apps.api.swarm_ports: port 8002 is also apps.web.swarm_ports",
        ),
    ],
)
def test_config_problems(change, problem):
    data = tomllib.loads(MINIMAL)
    change(data)
    with pytest.raises(ConfigError) as failure:
        parse_config(data)
    assert any(problem in p for p in failure.value.problems), failure.value.problems


@pytest.mark.parametrize("admin", ["127.0.0.1:2019", "localhost:2019", "[::1]:2019", "unix//run/caddy/admin.sock"])
def test_loopback_and_unix_admin_addresses_are_accepted(admin):
    data = tomllib.loads(MINIMAL)
    data["caddy"]["admin"] = admin
    assert parse_config(data).caddy.admin == admin


def test_notify_and_metrics():
    data = tomllib.loads(MINIMAL)
    data["notify"] = {"command": "/usr/local/bin/tell-team", "webhook": "https://hooks.example.com/T0/B1"}
    data["metrics_textfile"] = "/var/lib/prometheus/node-exporter/zdd.prom"
    config = parse_config(data)
    assert config.notify.command == ("/bin/sh", "-c", "/usr/local/bin/tell-team")
    assert (config.notify.webhook, config.notify.webhook_timeout, config.notify.webhook_attempts) == (
        "https://hooks.example.com/T0/B1",
        5.0,
        4,
    )
    assert config.metrics_textfile == Path("/var/lib/prometheus/node-exporter/zdd.prom")


def test_no_app_is_valid_so_a_fresh_install_idles():
    data = tomllib.loads(MINIMAL)
    data.pop("apps")
    assert parse_config(data).apps == {}


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as failure:
        parse_config(with_app(port=0, pull="x", colour=1))
    assert len(failure.value.problems) == 3


def test_load_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "zdd.toml"
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(path)
    path.write_text("[apps.web\nimage=")
    with pytest.raises(ConfigError, match=f"{path}: not valid TOML"):
        load_config(path)
    path.write_text(MINIMAL)
    assert load_config(path, state_dir="/tmp/zdd-x").state_dir == Path("/tmp/zdd-x")


@pytest.mark.parametrize(
    "text, seconds",
    [("30s", 30), ("500ms", 0.5), ("2m", 120), ("1h", 3600), (5, 5), (0.25, 0.25), ("1.5s", 1.5), (" 7 ", 7)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "3 days", "-1s", True, [1], "1e3s"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "text, size", [("2GB", 2 * 10**9), ("500MB", 5 * 10**8), ("1GiB", 2**30), (1024, 1024), ("1.5 gb", 15 * 10**8)]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "-1GB", True, "2 GBs", -5])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_duration():
    assert format_duration(30) == "30000ms" and format_duration(0.25) == "250ms"


@pytest.mark.parametrize(
    "seconds, text", [(0.25, "250ms"), (1, "1s"), (1.5, "1.5s"), (30, "30s"), (120, "2m"), (150, "2m30s"), (-1, "0ms")]
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_the_readme_s_swarm_example_parses_as_written():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### An app on a Docker Swarm") :]
    block = section[section.index("```toml\n") + 8 : section.index("```\n", section.index("```toml\n") + 8)]
    app = parse_config(tomllib.loads(block)).apps["web"]
    assert (app.engine, app.replicas, app.swarm_ports) == ("swarm", 3, (18301, 18302))
