"""`zdd logs [APP]`: the live container's output without knowing its generated name (following it from
one version to the next with -f), or with --failed the output zdd kept of the last deploy's container
that never went live or was rolled back."""

import argparse
import sys
import time
from datetime import datetime

from .config import Config
from .errors import RequestError, ZddError
from .failed_output import FailedOutput
from .state import Replica, Running, StateStore
from .units import parse_duration

FOLLOW_POLL = 0.5  # seconds between reads of state.toml while -f waits for the next version


def app_named(config: Config, name: str | None, command: str) -> str:
    if name:
        if name not in config.apps:
            raise RequestError(f"{name!r} is not a configured app (configured: {', '.join(config.apps) or 'none'})")
        return name
    if len(config.apps) != 1:
        raise RequestError(f"name the app: zdd {command} APP (configured: {', '.join(config.apps) or 'none'})")
    return next(iter(config.apps))


def parse_since(value: str | None, now: float) -> int | None:
    """`10m` (that long ago) or an ISO 8601 time (`2026-11-29T07:00:00`, local unless it says) -> epoch."""
    if not value:
        return None
    try:
        return max(1, int(now - parse_duration(value)))  # Docker takes a positive time
    except ValueError:
        pass
    try:
        return max(1, int(datetime.fromisoformat(value).timestamp()))
    except ValueError:
        raise RequestError(f"--since {value!r}: expected a duration like 10m or a time like 2026-11-29T07:00") from None


def pick_replica(app: str, current: Running, number: int, following: bool = False) -> Replica:
    """The live version's container number `number` (1 = the first); an app with one has only 1. While
    following, a next version with fewer containers goes on with its last one."""
    replicas = current.replicas
    if following and number > len(replicas) >= 1:
        return replicas[-1]  # the "now <tag> (<name>)" line names it
    if not 1 <= number <= len(replicas):
        raise RequestError(
            f"--replica {number}: {app} runs {len(replicas)} container(s) of {current.tag} (1..{len(replicas)})"
        )
    return replicas[number - 1]


def parse_tail(value: str) -> int | str:
    if value == "all":
        return value
    if value.isdigit():
        return int(value)
    raise RequestError(f"--tail {value!r}: expected a number of lines or all")


def cmd_logs(args: argparse.Namespace, config: Config) -> int:
    app = app_named(config, args.app, "logs")
    if args.failed:
        text = FailedOutput(config.state_dir).read(app)
        if text is None:
            raise ZddError(
                f"{app}: no failed deploy's output is kept (it is kept from a failure until the next deploy)"
            )
        sys.stdout.write(text)
        return 0
    from .docker_runtime import DockerRuntime  # imports docker only here

    runtime = DockerRuntime(config.docker_host, config.network, instance="")
    if config.apps[app].engine == "swarm":  # its tasks' output, which Swarm fetches from their nodes
        from .swarm_runtime import SwarmRuntime

        runtime = SwarmRuntime(runtime.client)
    store = StateStore(config.state_dir)
    since, tail = parse_since(args.since, time.time()), parse_tail(args.tail)
    shown, ended = "", 0
    while True:
        current = store.load().app(app).current
        if current is None:
            if shown:  # between the state's writes, or the app was taken down: keep waiting while following
                time.sleep(FOLLOW_POLL)
                continue
            raise ZddError(f"{app}: nothing deployed, so no container to show (zdd logs --failed shows a failure)")
        replica = pick_replica(app, current, args.replica, following=bool(shown))
        if replica.container_id == shown:
            time.sleep(FOLLOW_POLL)  # its output ended (it stopped): wait for Docker to restart it or a new version
            if not runtime.is_running(shown):
                continue
            since, tail = ended, "all"  # Docker restarted it: what it wrote since the stream ended
        elif shown:
            print(f"# zdd: {app}: now {current.tag} ({replica.container_name})", file=sys.stderr, flush=True)
            since, tail = None, "all"
        shown = replica.container_id
        for chunk in runtime.stream_output(
            shown, follow=args.follow, since=since, tail=tail, timestamps=args.timestamps
        ):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
        ended = int(time.time())
        if not args.follow:
            return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    logs = sub.add_parser(
        "logs", help="the live container's output (-f follows it across deploys); --failed: the last failed one's"
    )
    logs.add_argument("app", nargs="?", help="the app (needed when several are configured)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing, from one version to the next")
    logs.add_argument("--since", help="only output since then: 10m, 2h, or a time like 2026-11-29T07:00")
    logs.add_argument("-n", "--tail", default="100", help="the last N lines before following (default 100; all)")
    logs.add_argument("-t", "--timestamps", action="store_true", help="Docker's timestamp on each line")
    logs.add_argument(
        "--replica", type=int, default=1, metavar="N", help="with apps.NAME.replicas: the Nth container (default 1)"
    )
    logs.add_argument("--failed", action="store_true", help="the output kept of the last deploy's failed container")
    return logs
