"""zdd.toml -> frozen dataclasses. Every check lives here, and every problem names its key."""

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .reference import APP_NAME_RE, REPOSITORY_RE
from .units import parse_duration, parse_size

DEFAULT_CONFIG = Path("/etc/zdd/zdd.toml")
DEFAULT_REGISTRY_AUTH = Path("/etc/zdd/registry-auth.json")
PULL_POLICIES = ("missing", "always", "never")
ENGINES = ("local", "swarm")
# Settings a Swarm app cannot have yet, each with why (docs/swarm.md): refused, never silently ignored.
NOT_ON_SWARM = {
    "release_command": "a one-off task on the Swarm is not built yet",
    "volumes": "a host path differs from node to node",
    "networks": "a Swarm service joins attachable overlay networks only, which zdd does not check yet",
    "env_file": "the file is on this host, not on the nodes; use env",
    "pids_limit": "zdd does not pass it to Swarm services yet",
}
MAX_REPLICAS = 16  # 16 A records fit in a 512-byte UDP reply; 16 SRV records in the 1232 bytes Go reads


@dataclass(frozen=True)
class HealthCheck:
    """One probe of the health gate and the probation: what to ask and which answers count as healthy."""

    path: str
    timeout: float
    host: str | None = None  # the Host header; None: the address probed (apps that check Host reject that)
    statuses: tuple[int, ...] = ()  # the status codes that count as healthy; empty: any 2xx

    def accepts(self, status: int) -> bool:
        return status in self.statuses if self.statuses else 200 <= status < 300


@dataclass(frozen=True)
class AppConfig:
    name: str
    image: str  # the repository; the queue names the tag
    port: int
    health_path: str = "/up"
    health_interval: float = 0.1  # between probes; short so the switch follows readiness closely
    health_timeout: float = 2.0  # one probe
    health_successes: int = 3  # consecutive healthy answers needed
    health_host: str | None = None  # Host header of the probe (Rails, Django reject hosts they do not know)
    health_status: tuple[int, ...] = ()  # status codes that count as healthy; empty: any 2xx
    start_timeout: float = 60.0  # from container start until healthy
    drain_timeout: float = 30.0  # longest wait for in-flight requests on the old container
    stop_timeout: float = 10.0  # SIGTERM -> SIGKILL
    # After the switch the old container stays running, unrouted, this long: if the new one dies or
    # fails its health check meanwhile, traffic goes back at once, with no pull and no boot.
    probation: float = 30.0
    keep_images: int = 3  # images of earlier versions kept after a deploy, besides the live one
    pull: str = "missing"
    pull_stall_timeout: float = 120.0  # a pull with no progress from the registry this long is given up
    min_free_space: int = 1_000_000_000  # bytes free in Docker's data root, or a pull is refused before it starts
    env: Mapping[str, str] = field(default_factory=dict)
    env_file: Path | None = None
    volumes: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    # Docker networks every new container joins besides zdd's own (where the app reaches its database by
    # name); they must exist: zdd does not create or remove them.
    networks: tuple[str, ...] = ()
    # Run once per deploy in a one-off container of the new image, after the pull and before the new
    # version starts (migrations); non-zero exit or release_timeout fails the deploy. A string runs in /bin/sh.
    release_command: tuple[str, ...] = ()
    release_timeout: float = 300.0
    memory: int | None = None  # bytes; docker run --memory
    cpus: float | None = None  # docker run --cpus
    pids_limit: int | None = None  # docker run --pids-limit
    # Containers per version: Caddy spreads requests over them; a deploy gates all new ones before the
    # switch and drains all old ones after it.
    replicas: int = 1
    # "swarm": the app runs as two Swarm services used in turn (blue/green) on the Swarm docker_host
    # manages, each publishing its own port on every node, so Caddy finds its tasks by SRV (docs/swarm.md).
    engine: str = "local"
    swarm_ports: tuple[int, ...] = (18301, 18302)  # published on every node: blue's, green's

    @property
    def health(self) -> HealthCheck:
        return HealthCheck(self.health_path, self.health_timeout, self.health_host, self.health_status)


@dataclass(frozen=True)
class CaddyConfig:
    admin: str = "127.0.0.1:2019"  # host:port on loopback, or unix//path/to/socket
    caddyfile: Path = Path("/etc/caddy/Caddyfile")
    # Where each app's snippet lives. Default: beside the state dir, `<state_dir>-caddy` (the package's
    # /var/lib/zdd-caddy): the state dir is 0750, and the caddy user must read the snippets.
    snippet_dir: Path | None = None
    # Where `zdd dns` answers Caddy's lookups of each app's container (zdd-dns.socket listens there).
    resolver: str = "127.0.0.1:5354"
    # The caddy binary: zdd adapts the Caddyfile with it, as `caddy reload --config FILE` does.
    command: str = "caddy"


@dataclass(frozen=True)
class NotifyConfig:
    """Where deploy results are told: a hook command and/or a webhook; either may be unset."""

    command: tuple[str, ...] = ()  # run with ZDD_APP, ZDD_FROM, ZDD_TO, ZDD_RESULT, ZDD_REASON, ZDD_DEPLOY_ID
    command_timeout: float = 10.0
    webhook: str = ""  # gets a JSON body by POST; retried with backoff on a failure
    webhook_timeout: float = 5.0
    webhook_attempts: int = 4


@dataclass(frozen=True)
class Config:
    state_dir: Path = Path("/var/lib/zdd")
    network: str = "zdd"
    docker_host: str = "unix:///var/run/docker.sock"
    reconcile_interval: float = 30.0  # seconds between idle checks that what runs is what Caddy routes to
    # Logins for private registries, in Docker's config.json format; none needed if the file is absent.
    registry_auth: Path = DEFAULT_REGISTRY_AUTH
    caddy: CaddyConfig = CaddyConfig()
    notify: NotifyConfig = NotifyConfig()
    # node_exporter's textfile collector reads this file (Prometheus text format), rewritten atomically.
    metrics_textfile: Path | None = None
    apps: Mapping[str, AppConfig] = field(default_factory=dict)
    source: Path | None = None
    state_dir_override: str | None = None  # --state-dir / ZDD_STATE_DIR: a reload of the file keeps it

    @property
    def queue_path(self) -> Path:
        return self.state_dir / "queue"

    @property
    def requests_dir(self) -> Path:
        return self.state_dir / "requests"

    @property
    def snippet_dir(self) -> Path:
        return self.caddy.snippet_dir or self.state_dir.with_name(f"{self.state_dir.name}-caddy")

    @property
    def routes_path(self) -> Path:
        return self.state_dir / "routes.toml"

    def snippet_path(self, app: str) -> Path:
        return self.snippet_dir / f"{app}.caddy"

    def repositories(self) -> dict[str, str]:
        return {name: app.image for name, app in self.apps.items()}


class _Reader:
    """Pulls typed values out of one TOML table, recording problems instead of stopping at the first."""

    def __init__(self, table: Mapping[str, Any], prefix: str, problems: list[str]):
        self.table, self.prefix, self.problems = table, prefix, problems
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def get(self, name: str, kind: type, default: Any, check: Callable | None = None) -> Any:
        self.seen.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        # bool is an int in Python; a port of `true` is still wrong.
        if kind is not object and (not isinstance(value, kind) or isinstance(value, bool)):
            self.problems.append(f"{self.key(name)}: expected {_type_name(kind)}, got {_type_name(type(value))}")
            return default
        if check:
            try:
                return check(value)
            except ValueError as err:
                self.problems.append(f"{self.key(name)}: {err}")
                return default
        return value

    def duration(self, name: str, default: float) -> float:
        return self.get(name, object, default, parse_duration)

    def unknown(self) -> None:
        for name in self.table:
            if name not in self.seen:
                self.problems.append(f"{self.key(name)}: unknown key")


_KIND_NAMES = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "a table",
}


def _type_name(kind: type) -> str:
    return _KIND_NAMES.get(kind, kind.__name__)


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is out of range 1-65535")
    return value


def _replicas(value: int) -> int:
    if not 1 <= value <= MAX_REPLICAS:
        raise ValueError(f"must be 1 to {MAX_REPLICAS} (containers of each version on this host)")
    return value


def _engine(value: str) -> str:
    if value not in ENGINES:
        raise ValueError(f"must be one of {', '.join(ENGINES)}, got {value!r}")
    return value


def _swarm_ports(value: list) -> tuple[int, ...]:
    if len(value) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in value):
        raise ValueError("expected two port numbers, [blue's, green's]")
    if value[0] == value[1]:
        raise ValueError(f"the two ports must differ (both colours run at once during a deploy), got {value[0]} twice")
    return tuple(_port(p) for p in value)


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _not_negative(value: int) -> int:
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _repository(value: str) -> str:
    if ":" in value.rpartition("/")[2] or "@" in value:
        raise ValueError(f"{value!r} must be a repository without tag or digest; the queue names the tag")
    if not REPOSITORY_RE.match(value):
        raise ValueError(f"{value!r} is not a valid image repository")
    return value


def _health_path(value: str) -> str:
    if not value.startswith("/") or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} must be a URL path starting with / and without spaces")
    return value


_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")


def _health_host(value: str) -> str:
    if not _HOST_RE.match(value):
        raise ValueError(f'{value!r} must be a host name as a browser sends it, e.g. "example.com" or "app.test:80"')
    return value


def _status_codes(value: list) -> tuple[int, ...]:
    if not value or not all(isinstance(code, int) and not isinstance(code, bool) for code in value):
        raise ValueError("expected a non-empty list of HTTP status codes, e.g. [200, 301]")
    bad = [str(code) for code in value if not 100 <= code <= 599]
    if bad:
        raise ValueError(f"{', '.join(bad)}: HTTP status codes are 100-599")
    return tuple(value)


_NETWORK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _networks(value: list) -> tuple[str, ...]:
    names = _string_list(value)
    bad = [name for name in names if not _NETWORK_RE.match(name)]
    if bad:
        raise ValueError(f"{', '.join(map(repr, bad))}: not a Docker network name")
    if len(set(names)) != len(names):
        raise ValueError("a network is named twice")
    return names


def _command(value: object) -> tuple[str, ...]:
    """A list runs as it is (exec form); a string runs in /bin/sh -c (shell form), as in a Dockerfile."""
    if isinstance(value, str) and value.strip():
        return ("/bin/sh", "-c", value)
    if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
        return tuple(value)
    raise ValueError('expected a command: a list like ["bin/rails", "db:migrate"] or a shell string')


def _webhook_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or any(c.isspace() for c in value):
        raise ValueError(f"{value!r} must be an http:// or https:// URL")
    return value


def _prom_file(value: str) -> str:
    path = _absolute_path(value)
    if path.suffix != ".prom":
        raise ValueError(f"{value!r}: node_exporter's textfile collector reads only files named *.prom")
    return value


MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses a smaller --memory


def _memory(value: object) -> int:
    size = parse_size(value)
    if size < MIN_MEMORY:
        raise ValueError(f"{value!r} is below Docker's minimum of 6MiB")
    return size


def _cpus(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"expected a number of CPUs above 0, like 1.5, got {value!r}")
    return float(value)


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _pull(value: str) -> str:
    if value not in PULL_POLICIES:
        raise ValueError(f"{value!r} is not one of {', '.join(PULL_POLICIES)}")
    return value


def _string_map(value: dict) -> dict[str, str]:
    bad = [k for k, v in value.items() if not isinstance(v, str | int | float) or isinstance(v, bool)]
    if bad:
        raise ValueError(f"values must be strings or numbers (bad: {', '.join(bad)})")
    return {str(k): str(v) for k, v in value.items()}


def _string_list(value: list) -> tuple[str, ...]:
    if not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _absolute_path(value: str) -> Path:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute path")
    return Path(value)


def _loopback_host_port(value: str, why: str, form: str = "HOST:PORT on loopback") -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} must be {form}")
    host = host.strip("[]")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"{value!r} is not on loopback; {why}")
    return value


def check_resolver_address(value: str) -> str:
    """zdd dns answers whoever reaches it: loopback only, IP:PORT (UDP). An IP, not `localhost`: Caddy
    would try ::1 first, where the socket does not listen."""
    host = value.rpartition(":")[0].strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r} must be IP:PORT on loopback, e.g. 127.0.0.1:5354") from None
    return _loopback_host_port(value, "zdd dns tells whoever asks where the apps run")


def check_admin_address(value: str) -> str:
    """Caddy's admin API has no authentication: only loopback or a unix socket is allowed."""
    if value.startswith("unix/"):
        if not value[len("unix/") :].startswith("/"):
            raise ValueError(f"{value!r}: a unix socket must be written unix//absolute/path")
        return value
    return _loopback_host_port(value, "Caddy's admin API has no authentication", "HOST:PORT on loopback or unix//path")


def _app(name: str, table: Mapping[str, Any], problems: list[str]) -> AppConfig | None:
    prefix = f"apps.{name}."
    if not APP_NAME_RE.match(name):
        problems.append(f"apps.{name}: app names are lowercase letters, digits, - and _ (max 63)")
    r = _Reader(table, prefix, problems)
    before = len(problems)
    image = r.get("image", str, None, _repository)
    port = r.get("port", int, None, _port)
    if "image" not in table:
        problems.append(f'{prefix}image: missing (the image repository, e.g. "registry.example.com/acme/web")')
    if "port" not in table:
        problems.append(f"{prefix}port: missing (the port the app listens on inside its container)")
    d = AppConfig
    app = AppConfig(
        name=name,
        image=image or "",
        port=port or 0,
        health_path=r.get("health_path", str, d.health_path, _health_path),
        health_interval=r.duration("health_interval", d.health_interval),
        health_timeout=r.duration("health_timeout", d.health_timeout),
        health_successes=r.get("health_successes", int, d.health_successes, _positive),
        health_host=r.get("health_host", str, None, _health_host),
        health_status=r.get("health_status", list, (), _status_codes),
        start_timeout=r.duration("start_timeout", d.start_timeout),
        drain_timeout=r.duration("drain_timeout", d.drain_timeout),
        stop_timeout=r.duration("stop_timeout", d.stop_timeout),
        probation=r.duration("probation", d.probation),
        keep_images=r.get("keep_images", int, d.keep_images, _not_negative),
        pull=r.get("pull", str, d.pull, _pull),
        pull_stall_timeout=r.duration("pull_stall_timeout", d.pull_stall_timeout),
        min_free_space=r.get("min_free_space", object, d.min_free_space, parse_size),
        env=r.get("env", dict, {}, _string_map),
        env_file=r.get("env_file", str, None, _absolute_path),
        volumes=r.get("volumes", list, (), _string_list),
        labels=r.get("labels", dict, {}, _string_map),
        command=r.get("command", list, (), _string_list),
        networks=r.get("networks", list, (), _networks),
        release_command=r.get("release_command", object, (), _command),
        release_timeout=r.duration("release_timeout", d.release_timeout),
        memory=r.get("memory", object, None, _memory),
        cpus=r.get("cpus", object, None, _cpus),
        pids_limit=r.get("pids_limit", int, None, _positive),
        replicas=r.get("replicas", int, d.replicas, _replicas),
        engine=r.get("engine", str, d.engine, _engine),
        swarm_ports=r.get("swarm_ports", list, d.swarm_ports, _swarm_ports),
    )
    r.unknown()
    if app.engine == "swarm":
        problems.extend(
            f'{prefix}{key}: not supported with engine = "swarm" ({why})'
            for key, why in NOT_ON_SWARM.items()
            if key in table
        )
    elif "swarm_ports" in table:
        problems.append(f'{prefix}swarm_ports: only for engine = "swarm"')
    if app.health_interval <= 0 and "health_interval" in table:
        problems.append(f"{prefix}health_interval: must be more than 0")
    if any(key.startswith("zdd.") for key in app.labels):
        problems.append(f"{prefix}labels: keys starting with 'zdd.' are zdd's own")
    return app if len(problems) == before else None


def parse_config(data: Mapping[str, Any], source: Path | None = None) -> Config:
    """Validate a parsed TOML document; raise ConfigError listing every problem."""
    problems: list[str] = []
    top = _Reader(data, "", problems)
    state_dir = top.get("state_dir", str, str(Config.state_dir), _absolute_path)
    network = top.get("network", str, Config.network)
    docker_host = top.get("docker_host", str, os.environ.get("DOCKER_HOST", Config.docker_host))
    reconcile_interval = top.duration("reconcile_interval", Config.reconcile_interval)
    registry_auth = top.get("registry_auth", str, DEFAULT_REGISTRY_AUTH, _absolute_path)
    caddy_table = top.get("caddy", dict, {})
    notify_table = top.get("notify", dict, {})
    metrics_textfile = top.get("metrics_textfile", str, None, _prom_file)
    apps_table = top.get("apps", dict, {})
    top.unknown()

    c = _Reader(caddy_table, "caddy.", problems)
    caddy = CaddyConfig(
        admin=c.get("admin", str, CaddyConfig.admin, check_admin_address),
        caddyfile=c.get("caddyfile", str, CaddyConfig.caddyfile, _absolute_path),
        snippet_dir=c.get("snippet_dir", str, None, _absolute_path),
        resolver=c.get("resolver", str, CaddyConfig.resolver, check_resolver_address),
        command=c.get("command", str, CaddyConfig.command, _non_empty),
    )
    c.unknown()

    n = _Reader(notify_table, "notify.", problems)
    notify = NotifyConfig(
        command=n.get("command", object, (), _command),
        command_timeout=n.duration("command_timeout", NotifyConfig.command_timeout),
        webhook=n.get("webhook", str, "", _webhook_url),
        webhook_timeout=n.duration("webhook_timeout", NotifyConfig.webhook_timeout),
        webhook_attempts=n.get("webhook_attempts", int, NotifyConfig.webhook_attempts, _positive),
    )
    n.unknown()

    apps: dict[str, AppConfig] = {}
    for name, table in apps_table.items():
        if not isinstance(table, dict):
            problems.append(f"apps.{name}: expected a table, got {_type_name(type(table))}")
            continue
        app = _app(name, table, problems)
        if app and network in app.networks:
            problems.append(f"apps.{name}.networks: {network!r} is zdd's own network; every container joins it")
        elif app:
            apps[name] = app
    problems.extend(_shared_swarm_ports(apps))
    if problems:
        raise ConfigError(problems)
    return Config(
        state_dir=Path(state_dir),
        network=network,
        docker_host=docker_host,
        reconcile_interval=max(reconcile_interval, 1.0),
        registry_auth=Path(registry_auth),
        caddy=caddy,
        notify=notify,
        metrics_textfile=Path(metrics_textfile) if metrics_textfile else None,
        apps=apps,
        source=source,
    )


def _shared_swarm_ports(apps: Mapping[str, AppConfig]) -> list[str]:
    """Every node publishes each Swarm app's two ports: two apps on one port would refuse each other's tasks."""
    owner: dict[int, str] = {}
    problems = []
    for name, app in apps.items():
        for port in app.swarm_ports if app.engine == "swarm" else ():
            if port in owner:
                problems.append(f"apps.{name}.swarm_ports: port {port} is also apps.{owner[port]}.swarm_ports")
            owner.setdefault(port, name)
    return problems


def config_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("ZDD_CONFIG") or DEFAULT_CONFIG)


def load_config(path: Path, state_dir: str | None = None) -> Config:
    """Read and validate a config file; `state_dir` (from --state-dir / ZDD_STATE_DIR) overrides the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    override = state_dir or os.environ.get("ZDD_STATE_DIR")
    if override:
        data = {**data, "state_dir": override}
    try:
        return replace(parse_config(data, source=path), state_dir_override=override or None)
    except ConfigError as err:
        raise ConfigError([f"{path}: {p}" for p in err.problems]) from None
