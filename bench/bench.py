"""Benchmark: one deploy v1 -> v2 under load, by zdd and by the seed's Bash recipe, in the same run.

    .venv/bin/python -m bench.bench [--caddy /usr/bin/caddy] [--steady 5] [--png bench-timeline.png]
                                    [--health-successes 3]

Prints requests sent and failed, p50/p99 latency before and during the deploy, time from `echo` to
the new version serving and to done (probation 0), against the floor: `docker run` of the same image
until its health check first answers, and `docker stop` of it, on a quiet machine and under the same
load. Also the drain the app needed (its slowest request on the old version after the switch) and
zdd's CPU seconds (agent and zdd dns) for the deploy. Draws the deploy as a timeline
(bench/timeline.py). Not part of the test suite: speed is measured here, correctness (zero failed) is
asserted in tests/.
"""

import argparse
import contextlib
import functools
import http.client
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

from bench.timeline import Run, draw, zdd_steps
from tests.support import images
from tests.support.agent_process import AgentProcess, remove_app_containers, write_config
from tests.support.caddy_server import CaddyServer
from tests.support.load import LoadClient
from tests.support.net import free_udp_port
from zdd.host import reload_safety_problem

HERE = Path(__file__).resolve().parent


@dataclass
class Floor:
    """What no deploy tool can beat, median of a few runs: `docker run` of v2 until its /up first answers
    200 (probed every 10 ms on a network of its own, as zdd dials it), and `docker stop` of it (the app's
    own SIGTERM handling plus Docker's)."""

    start: float
    stop: float


@dataclass
class Figures:
    name: str
    sent: int
    failed: int
    p50_before: float
    p99_before: float
    p50_during: float
    p99_during: float
    to_serving: float
    to_old_gone: float
    to_done: float  # the deploy's last step finished (zdd: the old container is gone)
    drain_needed: float  # the last answer of the old version after the first of the new one
    cpu: float | None = None  # CPU seconds zdd spent on the deploy (agent and zdd dns); None for the recipe
    loaded_floor: Floor | None = None  # the floor measured under the same load, right after the deploy


def percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def latencies(load: LoadClient, start: float, end: float) -> list[float]:
    # Slow requests sleep on purpose; latency figures are for the ordinary ones.
    return [r.ended - r.started for r in load.results if r.kind != "slow" and start <= r.started < end]


def wait(predicate, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError("benchmark step did not finish")


def figures(
    name: str, load: LoadClient, t0: float, serving: float, gone: float, done: float, steady_start: float
) -> Figures:
    before = latencies(load, steady_start, t0)
    during = latencies(load, t0, done)
    return Figures(
        name,
        len(load.results),
        len(load.failures),
        percentile(before, 50),
        percentile(before, 99),
        percentile(during, 50),
        percentile(during, 99),
        serving - t0,
        gone - t0,
        done - t0,
        max((r.ended for r in load.results if r.ok and r.body == "v1" and r.ended > serving), default=serving)
        - serving,
    )


def first_serving(load: LoadClient, t0: float, body: str) -> float:
    return min(r.ended for r in load.results if r.started >= t0 and r.body == body and r.ok)


@contextlib.contextmanager
def zdd_stack(
    client, caddy_binary: str, workdir: Path, network: str, probation: str = "0s", **app_keys: object
) -> Iterator[tuple[CaddyServer, AgentProcess]]:
    """Caddy, `zdd dns` and `zdd run` for the example app, started in the order a server needs (the
    agent writes the snippet the Caddyfile imports), and everything removed afterwards."""
    state = workdir / "state"
    state.mkdir()
    snippet = workdir / "state-caddy" / "web.caddy"  # the default snippet dir: beside the state dir
    caddy = CaddyServer(caddy_binary, workdir, snippet)
    # The benchmark runs without probation: the recipe has none, and "done" would otherwise include the
    # time the old container waits, unrouted, after zdd has finished everything the recipe does.
    app = {"image": images.REPOSITORY, "port": 8080, "health_path": "/up", "probation": probation, **app_keys}
    resolver = f"127.0.0.1:{free_udp_port()}"
    config = write_config(
        workdir / "zdd.toml", state, caddy.admin, caddy.caddyfile, network, {"web": app}, resolver, caddy_binary
    )
    agent = AgentProcess(config, state, workdir)
    agent.start(wait_ready=False)
    try:
        wait(snippet.exists)
        caddy.start()
        agent.notify.wait_for("READY=1")
        yield caddy, agent
    finally:
        agent.close()
        caddy.stop()
        remove_app_containers(client, network)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def floor(client, runs: int = 3) -> Floor:
    network = client.networks.create("zdd-bench-floor")
    starts, stops = [], []
    try:
        for _ in range(runs):
            started = time.monotonic()
            container = client.containers.run(f"{images.REPOSITORY}:v2", detach=True, network=network.name, init=True)
            try:
                container.reload()
                ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
                starts.append(wait(lambda ip=ip: _up(ip), timeout=30) - started)
                stopping = time.monotonic()
                container.stop(timeout=10)
                stops.append(time.monotonic() - stopping)
            finally:
                container.remove(force=True)
    finally:
        network.remove()
    return Floor(statistics.median(starts), statistics.median(stops))


def _up(ip: str) -> bool:
    conn = http.client.HTTPConnection(ip, 8080, timeout=1)
    try:
        conn.request("GET", "/up")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def bench_zdd(client, caddy_binary: str, workdir: Path, steady: float, **app_keys: object) -> tuple[Figures, Run]:
    with zdd_stack(client, caddy_binary, workdir, "zdd-bench", **app_keys) as (caddy, agent):
        assert agent.cli("deploy", "v1", "--wait").returncode == 0, agent.log
        old = {c.id for c in client.containers.list(filters={"label": "zdd.app=web"})}
        pids = (agent.process.pid, agent.resolver.process.pid)
        with LoadClient(caddy.port) as load:
            steady_start = time.monotonic()
            time.sleep(steady)
            cpu_before = sum(cpu_seconds(pid) for pid in pids)
            t0 = time.monotonic()
            agent.echo("v2")
            wait(lambda: any(r.body == "v2" for r in load.results[-50:]))
            gone = wait(
                lambda: (
                    not old
                    & {
                        c.id
                        for c in client.containers.list(all=True, ignore_removed=True, filters={"label": "zdd.app=web"})
                    }
                )
            )
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
            time.sleep(1)
        # The deploy's Docker calls ran beside Caddy and the load on the same CPUs: so does this floor
        # (its own load client: the deploy's figures and timeline end with the deploy).
        with LoadClient(caddy.port):
            time.sleep(1)
            loaded = floor(client)
        result = figures("zdd", load, t0, first_serving(load, t0, "v2"), gone, gone, steady_start)
        result.cpu, result.loaded_floor = cpu, loaded
        run = Run("zdd", t0, list(load.results), zdd_steps(list(agent.notify.messages), t0), end=gone)
        return result, run


def bench_bash(client, caddy_binary: str, workdir: Path, steady: float) -> tuple[Figures, Run]:
    snippet = workdir / "web.caddy"
    snippet.write_text("reverse_proxy 127.0.0.1:18181\n")
    caddy = CaddyServer(caddy_binary, workdir, snippet)
    for name in ("web", "web_new"):
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(
        ["docker", "run", "-d", "--name", "web", "-p", "127.0.0.1:18181:8080", f"{images.REPOSITORY}:v1"],
        check=True,
        capture_output=True,
    )
    caddy.start()
    env = {**os.environ, "PATH": f"{Path(caddy_binary).parent}:{os.environ['PATH']}"}
    try:
        caddy.wait_serving("v1")
        with LoadClient(caddy.port) as load:
            steady_start = time.monotonic()
            time.sleep(steady)
            t0 = time.monotonic()
            t0_wall = time.time()
            out = subprocess.run(
                [str(HERE / "bash_recipe.sh"), f"{images.REPOSITORY}:v2", str(snippet), str(caddy.caddyfile)],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout
            time.sleep(1)
        marks = [line.split() for line in out.splitlines()]
        at = {name: t0 + float(when) - t0_wall for name, when in marks}
        steps = [(t0, "start, health")] + [(at[name], name) for name, _ in marks]
        result = figures(
            "bash recipe", load, t0, first_serving(load, t0, "v2"), at["old-gone"], at["done"], steady_start
        )
        return result, Run("bash recipe", t0, list(load.results), steps[:-1], end=at["done"])
    finally:
        caddy.stop()
        for name in ("web", "web_new"):
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caddy", default="/usr/bin/caddy")
    parser.add_argument("--steady", type=float, default=5.0, help="seconds of load before the deploy")
    parser.add_argument("--png", default="bench-timeline.png", help="where to draw the timeline")
    parser.add_argument(
        "--health-successes", type=int, default=3, help="zdd's health gate: answers in a row (zdd's default 3)"
    )
    args = parser.parse_args()
    if reload_safety_problem():
        print(f"warning: {reload_safety_problem()}")
    client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    for tag in ("v1", "v2"):
        images.build(client, tag)
    version = subprocess.run([args.caddy, "version"], capture_output=True, text=True).stdout.split()[0]
    least = floor(client)
    results, runs = [], []
    for bench in (functools.partial(bench_zdd, health_successes=args.health_successes), bench_bash):
        with tempfile.TemporaryDirectory() as tmp:
            result, run = bench(client, args.caddy, Path(tmp), args.steady)
            results.append(result)
            runs.append(run)
    print(
        f"\none deploy v1 -> v2 under load (Caddy {version}; 2 keep-alive GET, 2 keep-alive POST, "
        "2 new-connection, 3 slow clients; nothing retried)"
    )
    header = (
        f"{'':13}{'sent':>7}{'failed':>8}{'p50 before':>12}{'p99 before':>12}{'p50 during':>12}"
        f"{'p99 during':>12}{'to serving':>12}{'to old gone':>13}{'to done':>10}{'CPU':>8}"
    )
    print(header)
    for f in results:
        cpu = f"{f.cpu:>7.2f}s" if f.cpu is not None else f"{'-':>8}"
        print(
            f"{f.name:13}{f.sent:>7}{f.failed:>8}{f.p50_before:>10.1f}ms{f.p99_before:>10.1f}ms"
            f"{f.p50_during:>10.1f}ms{f.p99_during:>10.1f}ms{f.to_serving:>11.2f}s{f.to_old_gone:>12.2f}s"
            f"{f.to_done:>9.2f}s{cpu}"
        )
    zdd, bash = results
    loaded = zdd.loaded_floor
    assert loaded is not None
    print(
        f"\nfloor (median of 3): docker run of v2 until /up first answers {least.start:.2f}s on a quiet machine, "
        f"{loaded.start:.2f}s under the benchmark's load; docker stop of it (the app's SIGTERM handling) "
        f"{least.stop:.2f}s, {loaded.stop:.2f}s under load"
    )
    print(
        f"zdd enqueue to serving: {zdd.to_serving:.2f}s = floor under load + {zdd.to_serving - loaded.start:.2f}s "
        f"(target <= + 0.20s), health gate of {args.health_successes} answers in a row"
    )
    rest = zdd.to_done - loaded.start - zdd.drain_needed
    print(
        f"zdd enqueue to done (probation 0): {zdd.to_done:.2f}s = floor under load + drain the app needed "
        f"{zdd.drain_needed:.2f}s + {rest:.2f}s (target <= + 1.00s), of which the app's stop under load "
        f"{loaded.stop:.2f}s"
    )
    print("zdd steps, seconds after the enqueue: " + ", ".join(f"{n} {at - runs[0].t0:.2f}" for at, n in runs[0].steps))
    print(f"zdd p99 during / p99 before: {zdd.p99_during / zdd.p99_before:.2f}")
    print(f"zdd CPU for the deploy (agent + zdd dns): {zdd.cpu:.2f}s")
    print(f"failed: zdd {zdd.failed}, Bash recipe {bash.failed} (target 0)")
    if draw(runs, Path(args.png)):
        print(f"timeline: {args.png}")
    else:
        print("timeline: not drawn (pip install matplotlib)")


if __name__ == "__main__":
    main()
