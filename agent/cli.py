"""The `zdd` command. Exit codes: 0 ok, 1 the operation failed, 2 bad usage or invalid config,
3 (status) a deploy is not live / last deploy failed, 4 (deploy --wait) timed out."""

import argparse
import json
import os
import pwd
import re
import sys
import time
import tomllib
from dataclasses import asdict
from pathlib import Path

from . import __version__, app_logs
from .caddy import CaddyRouter
from .check import check_docker, check_host, check_registry_auth
from .config import Config, NotifyConfig, config_path, load_config, parse_config
from .errors import ConfigError, RequestError, TemporaryError, ZddError
from .host import reload_safety_problem
from .ledger import TERMINAL, Ledger, Result
from .lock import StateLock
from .progress import Progress
from .queue import QueueFile, RequestDrop
from .reference import parse_request
from .state import HistoryEntry, StateStore
from .systemd import setup_logging, under_journal

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_LIVE, EXIT_TIMEOUT = 0, 1, 2, 3, 4


def _load(args: argparse.Namespace) -> Config:
    return load_config(config_path(args.config), state_dir=args.state_dir)


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Agent  # imports docker and watchdog only for the agent

    setup_logging(args.verbose)
    config = _load(args)
    # As other daemons do: the state dir is created on first start (the package's tmpfiles does it too).
    config.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    return Agent(config).run()


def cmd_dns(args: argparse.Namespace) -> int:
    """Answer Caddy's lookups of each app's container from routes.toml (agent/dns.py), until stopped."""
    import logging

    from . import dns
    from .reachability import Reachability
    from .routes import LiveRoutes

    setup_logging(args.verbose)
    log = logging.getLogger("zdd.dns")
    try:
        config = _load(args)
    except ConfigError as err:
        # The site depends on these answers: a config in the middle of an edit must not take them away.
        # Only where routes.toml lives matters here: take state_dir from the file if it says it at all.
        config = Config(state_dir=_state_dir_leniently(args))
        for problem in err.problems:
            log.error("zdd dns: %s; answering from %s", problem, config.routes_path)
    sock = dns.systemd_socket()
    where = "the socket systemd passed (zdd-dns.socket)"
    if sock is None:
        where = config.caddy.resolver
        try:
            sock = dns.bind(config.caddy.resolver)
        except OSError as err:
            raise TemporaryError(f"zdd dns: cannot listen on {config.caddy.resolver}: {err.strerror or err}") from err
    reachability = Reachability()
    routes = LiveRoutes(config.routes_path, reachability)
    routes.current()
    reachability.start()
    log.info("zdd dns: answering on %s from %s", where, config.routes_path)
    dns.serve(sock, routes.lookup, routes.lookup_srv)
    return EXIT_OK


def _state_dir_leniently(args: argparse.Namespace) -> Path:
    override = args.state_dir or os.environ.get("ZDD_STATE_DIR")
    if override:
        return Path(override)
    try:
        value = tomllib.loads(config_path(args.config).read_text(encoding="utf-8")).get("state_dir")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        value = None
    return Path(value) if isinstance(value, str) and value.startswith("/") else Config.state_dir


def cmd_detach(args: argparse.Namespace) -> int:
    """Before zdd goes (the package's prerm, once zdd.service is stopped): each app's snippet names the
    container zdd dns answers now as a fixed upstream, and Caddy loads it, so the sites serve on
    without zdd dns. Refused while an agent runs: it could route again behind detach's back."""
    config = _load(args)
    lock = StateLock(config.state_dir)
    lock.acquire()
    try:
        state = StateStore(config.state_dir).load()
        router = CaddyRouter(config, state.instance)
        pinned = {}
        for name, app in config.apps.items():
            routed = router.routed(name)  # what Caddy is told now (mid-deploy, the new containers)
            current = state.app(name).current
            pinned[name] = routed[0] if routed else (current.addresses if current else [])
            router.detach(app, pinned[name])
        router.reload()
    finally:
        lock.release()
    for name, addresses in pinned.items():
        where = " ".join(addresses)
        print(f"{name}: Caddy proxies to {where} without zdd" if addresses else f"{name}: not deployed (503)")
    return EXIT_OK


def _docker_checks(config: Config) -> tuple[list[str], str | None]:
    """Problems only the engine can tell, or why it could not be asked (a warning: a member of group zdd
    may not use Docker's socket; root and the agent can)."""
    from .docker_runtime import DockerRuntime  # imports docker only where it is used

    try:
        runtime = DockerRuntime(config.docker_host, config.network, instance="")
        return check_docker(config, runtime.network_exists, runtime.manages_swarm), None
    except TemporaryError as err:
        return [], f"not checked with Docker (networks, Swarm): {err}"


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    problems, auth_warning = check_registry_auth(config)
    docker_warning = None
    if not args.offline:
        problems += check_host(config)
        if any(app.networks or app.engine == "swarm" for app in config.apps.values()):
            docker_problems, docker_warning = _docker_checks(config)
            problems += docker_problems
    for problem in problems:
        print(f"zdd check: {problem}", file=sys.stderr)
    warnings = [reload_safety_problem(), auth_warning, docker_warning]
    if not config.apps:
        warnings.append("no app configured: zdd idles until an [apps.NAME] table is added (then reload zdd)")
    for warning in filter(None, warnings):
        print(f"zdd check: warning: {warning}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    print(
        f"{config.source}: ok ({len(config.apps)} app{'s' if len(config.apps) != 1 else ''}: {', '.join(config.apps)})"
    )
    return EXIT_OK


def append_line(queue: Path, line: str) -> None:
    """One write with O_APPEND: concurrent `zdd deploy` calls never overwrite each other."""
    fd = os.open(queue, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def cmd_deploy(args: argparse.Namespace) -> int:
    config = _load(args)
    words = [args.app, args.tag] if args.tag else [args.app]
    request = parse_request(" ".join(words), config.repositories())
    if not config.state_dir.is_dir():
        raise ZddError(
            f"state dir {config.state_dir} does not exist: is zdd installed here, and has `zdd run` started once?"
        )
    written_at = time.time()
    if os.access(config.requests_dir, os.W_OK | os.X_OK):
        RequestDrop.submit(config.requests_dir, " ".join(words))  # the history records who asked
    else:  # an agent that never ran here yet: the queue file, writer unknown
        if not config.queue_path.exists():
            QueueFile(config.queue_path).ensure_exists()
        append_line(config.queue_path, " ".join(words))
    print(f"{request.app}: queued {request.ref}")
    if not args.wait:
        return EXIT_OK
    return _wait_for(config, request.app, str(request.ref), written_at, args.timeout)


def _wait_for(config: Config, app: str, reference: str, since: float, timeout: float) -> int:
    store, progress = StateStore(config.state_dir), Progress(config.state_dir)
    show = StepDisplay(sys.stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in reversed(store.load().history):
            if entry.app == app and entry.reference == reference and entry.requested_at >= since:
                if entry.result in TERMINAL:
                    show.done()
                    return _report(entry)
                step = progress.read(since=entry.started_at) if entry.result == Result.RUNNING else ""
                # The agent's STATUS names the app first: another app's step is not this deploy's.
                show.step(step if step.startswith(f"{app}: ") else f"{app}: {entry.tag}: {entry.result}")
                break
        time.sleep(0.2)
    show.done()
    print(f"zdd deploy: {app}: {reference} not finished within {timeout:g}s (is `zdd run` running?)", file=sys.stderr)
    return EXIT_TIMEOUT


class StepDisplay:
    """The deploy's steps as they happen: on a terminal one line rewritten in place, else a line each."""

    def __init__(self, out):
        self.out, self.tty, self.shown = out, out.isatty(), ""

    def step(self, text: str) -> None:
        if text == self.shown:
            return
        # Piped (a CI log), a step is printed once: not each second of its countdown or each health probe.
        same_step = re.sub(r"\d+", "#", text) == re.sub(r"\d+", "#", self.shown)
        self.shown = text
        if self.tty:
            self.out.write(f"\r\x1b[K{text}")
        elif not same_step:
            self.out.write(f"{text}\n")
        self.out.flush()

    def done(self) -> None:
        if self.tty and self.shown:
            self.out.write("\n")
            self.out.flush()


def _report(entry: HistoryEntry) -> int:
    if entry.result in ("succeeded", "unchanged"):
        print(f"{entry.app}: {entry.tag} is live ({entry.result})")
        return EXIT_OK
    print(f"zdd deploy: {entry.app}: {entry.tag} {entry.result}: {entry.reason}", file=sys.stderr)
    return EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args)
    state = StateStore(config.state_dir).load()
    report = {}
    for name in config.apps:
        app_state = state.app(name)
        current = app_state.current
        last = Ledger(state).last_ended(name)
        report[name] = {
            "engine": config.apps[name].engine,  # local, or swarm: its replicas are Swarm tasks on the nodes
            "current": current.tag if current else None,
            "reference": current.reference if current else None,
            "container": current.container_name if current else None,
            "address": current.address if current else None,
            # Every container of the live version (one unless apps.NAME.replicas says more).
            "replicas": [{"container": r.container_name, "address": r.address} for r in current.replicas]
            if current
            else [],
            "since": current.since if current else None,
            "previous": app_state.previous_tag or None,
            "phase": app_state.phase or None,
            # In probation the new version serves and `current` is still the old one, kept ready to go back to.
            "in_probation": app_state.phase_data.get("tag") if app_state.phase == "probation" else None,
            "last_deploy": {"tag": last.tag, "result": last.result, "reason": last.reason, "ended_at": last.ended_at}
            if last
            else None,
        }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, item in report.items():
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item["since"])) if item["since"] else ""
            where = ", ".join(f"{r['container']} at {r['address']}" for r in item["replicas"])
            where = f"on the Swarm: {where}" if item["engine"] == "swarm" else where
            line = (
                f"{name}: {item['current']} since {since} ({where})" if item["current"] else f"{name}: nothing deployed"
            )
            if item["in_probation"]:
                line += f"; {item['in_probation']} serves, in probation ({item['current']} kept ready)"
            elif item["phase"]:
                line += f"; deploy in progress: {item['phase']}"
            last = item["last_deploy"]
            if last:
                line += f"; last deploy {last['tag']}: {last['result']}"
                if last["reason"]:
                    line += f" ({last['reason']})"
            print(line)
    failed = any(
        not item["current"] or (item["last_deploy"] or {}).get("result") == "failed" for item in report.values()
    )
    return EXIT_NOT_LIVE if failed else EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    config = _load(args)
    history = [e for e in StateStore(config.state_dir).load().history if not args.app or e.app == args.app]
    history = history[-args.limit :]
    if args.json:
        print(json.dumps([asdict(e) for e in history], indent=2))
        return EXIT_OK
    for e in history:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.started_at or e.requested_at))
        took = f" in {e.ended_at - e.started_at:.1f}s" if e.ended_at and e.started_at else ""
        change = f"{e.from_tag} -> {e.tag}" if e.from_tag else e.tag
        by = f"  by {_user(e.requested_by)}" if e.requested_by >= 0 else ""
        line = f"{when}  {e.deploy_id}  {e.app}: {change}  {e.result}{took}{by}"
        print(line + (f"  ({e.reason})" if e.reason else ""))
    return EXIT_OK


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def cmd_logs(args: argparse.Namespace) -> int:
    return app_logs.cmd_logs(args, _load(args))


def _notify_leniently(path: Path) -> NotifyConfig:
    """The [notify] table alone: the agent may have failed on a mistake elsewhere in the same file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: cannot read [notify]: {err}") from None
    try:
        return parse_config({"notify": data.get("notify", {})}).notify
    except ConfigError as err:
        raise ConfigError([f"{path}: {problem}" for problem in err.problems]) from None


def cmd_notify_failure(args: argparse.Namespace) -> int:
    """What zdd-failure@.service runs once systemd gave up on the agent: the [notify] receivers are told."""
    import socket

    from .notify import Event, Notifications

    setup_logging(False)
    notify = _notify_leniently(config_path(args.config))
    host = socket.gethostname()
    # systemd tells an OnFailure= unit how the unit ended (systemd.exec(5), "MONITOR_*").
    how = ", ".join(
        filter(None, (os.environ.get(f"MONITOR_{key}") for key in ("SERVICE_RESULT", "EXIT_CODE", "EXIT_STATUS")))
    )
    reason = f"{args.unit} failed" + (f" ({how})" if how else "") + f"; journalctl -u {args.unit}"
    event = Event(app="", result="agent-failed", to="", reason=reason, host=host)
    notifications = Notifications(notify, host)
    if not notifications.enabled:
        print(f"zdd notify-failure: {args.unit} failed; no [notify] receiver configured", file=sys.stderr)
        return EXIT_OK
    return EXIT_OK if notifications.deliver(event) else EXIT_FAILED


def cmd_rollback(args: argparse.Namespace) -> int:
    """Queue the previous version of the app; it goes through the same zero-downtime path."""
    config = _load(args)
    apps = [args.app] if args.app else list(config.apps)
    if len(apps) != 1 or apps[0] not in config.apps:
        raise RequestError(f"name the app to roll back: zdd rollback APP (configured: {', '.join(config.apps)})")
    app = apps[0]
    previous = StateStore(config.state_dir).load().app(app).previous_reference
    if not previous:
        print(f"zdd rollback: {app} has no previous version to roll back to", file=sys.stderr)
        return EXIT_FAILED
    args.app, args.tag = app, previous
    return cmd_deploy(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zdd", description="Zero-downtime Docker deployments behind Caddy.")
    parser.add_argument("--version", action="version", version=f"zdd {__version__}")
    parser.add_argument("--config", help="config file (default: $ZDD_CONFIG or /etc/zdd/zdd.toml)")
    parser.add_argument("--state-dir", help="override state_dir (also $ZDD_STATE_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent in the foreground (as systemd starts it)")
    run.add_argument("-v", "--verbose", action="store_true", help="log debug lines too")
    run.set_defaults(func=cmd_run)

    deploy = sub.add_parser("deploy", help="queue a deploy: zdd deploy [APP] TAG")
    deploy.add_argument("app", metavar="[APP] TAG")
    deploy.add_argument("tag", nargs="?", help=argparse.SUPPRESS)
    deploy.add_argument("--wait", action="store_true", help="exit 0 only once that version is live")
    deploy.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
    deploy.set_defaults(func=cmd_deploy)

    status = sub.add_parser("status", help="what runs, and how the last deploy went")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    history = sub.add_parser("history", help="the deploys zdd remembers, oldest first")
    history.add_argument("app", nargs="?", help="only this app")
    history.add_argument("--json", action="store_true")
    history.add_argument("--limit", type=int, default=50, help="show the last N (default 50)")
    history.set_defaults(func=cmd_history)

    rollback = sub.add_parser("rollback", help="deploy the previous version again, the same zero-downtime way")
    rollback.add_argument("app", nargs="?")
    rollback.add_argument("--wait", action="store_true", help="exit 0 only once it is live")
    rollback.add_argument("--timeout", type=float, default=600.0)
    rollback.set_defaults(func=cmd_rollback)

    resolver = sub.add_parser("dns", help="answer Caddy's lookups of the apps' containers (as zdd-dns.service runs it)")
    resolver.add_argument("-v", "--verbose", action="store_true", help="log debug lines too")
    resolver.set_defaults(func=cmd_dns)

    detach = sub.add_parser("detach", help="give Caddy fixed upstreams, so sites serve without zdd (before removal)")
    detach.set_defaults(func=cmd_detach)

    app_logs.add_parser(sub).set_defaults(func=cmd_logs)

    failure = sub.add_parser("notify-failure", help="tell [notify] that a unit failed (zdd-failure@.service)")
    failure.add_argument("unit", help="the unit that failed, e.g. zdd.service")
    failure.set_defaults(func=cmd_notify_failure)

    check = sub.add_parser("check", help="validate the config and the Caddy setup")
    check.add_argument("--offline", action="store_true", help="check the file only, not Caddy")
    check.set_defaults(func=cmd_check)
    return parser


def _fail(message: str) -> None:
    # Under systemd the line must reach the journal at priority err, like the agent's own errors.
    prefix = "<3>" if under_journal() else ""
    print(f"{prefix}zdd: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        for problem in err.problems:
            _fail(problem)
        return EXIT_USAGE
    except RequestError as err:
        _fail(str(err))
        return EXIT_USAGE
    except ZddError as err:
        _fail(str(err))
        return EXIT_FAILED
    except PermissionError as err:
        _fail(f"{err.filename}: permission denied (are you root or in group zdd?)")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())
