"""Benchmark: one deploy v1 -> v2 under load, by zdd and by the seed's Bash recipe, in the same run.

    .venv/bin/python -m bench.bench [--caddy /usr/bin/caddy] [--steady 5]

Prints requests sent and failed, p50/p99 latency before and during the deploy, time from `echo` to
the new version serving, and time from `echo` to the old container gone. Not part of the test suite:
speed is measured here, correctness (zero failed) is asserted in tests/.
"""

import argparse
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.support import images
from tests.support.agent_process import AgentProcess, remove_app_containers, write_config
from tests.support.caddy_server import CaddyServer
from tests.support.load import LoadClient
from tests.support.net import free_udp_port
from zdd.host import reload_safety_problem

HERE = Path(__file__).resolve().parent


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


def bench_zdd(client, caddy_binary: str, workdir: Path, steady: float) -> Figures:
    with zdd_stack(client, caddy_binary, workdir, "zdd-bench") as (caddy, agent):
        assert agent.cli("deploy", "v1", "--wait").returncode == 0, agent.log
        old = {c.id for c in client.containers.list(filters={"label": "zdd.app=web"})}
        with LoadClient(caddy.port) as load:
            steady_start = time.monotonic()
            time.sleep(steady)
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
            time.sleep(1)
        return figures("zdd", load, t0, first_serving(load, t0, "v2"), gone, gone, steady_start)


def bench_bash(client, caddy_binary: str, workdir: Path, steady: float) -> Figures:
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
        marks = dict(line.split() for line in out.splitlines())
        gone = t0 + float(marks["old-gone"]) - t0_wall
        done = t0 + float(marks["done"]) - t0_wall
        return figures("bash recipe", load, t0, first_serving(load, t0, "v2"), gone, done, steady_start)
    finally:
        caddy.stop()
        for name in ("web", "web_new"):
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caddy", default="/usr/bin/caddy")
    parser.add_argument("--steady", type=float, default=5.0, help="seconds of load before the deploy")
    args = parser.parse_args()
    if reload_safety_problem():
        print(f"warning: {reload_safety_problem()}")
    client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    for tag in ("v1", "v2"):
        images.build(client, tag)
    version = subprocess.run([args.caddy, "version"], capture_output=True, text=True).stdout.split()[0]
    results = []
    for run in (bench_zdd, bench_bash):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run(client, args.caddy, Path(tmp), args.steady))
    print(
        f"\none deploy v1 -> v2 under load (Caddy {version}; 2 keep-alive GET, 2 keep-alive POST, "
        "2 new-connection, 3 slow clients; nothing retried)"
    )
    header = (
        f"{'':13}{'sent':>7}{'failed':>8}{'p50 before':>12}{'p99 before':>12}{'p50 during':>12}"
        f"{'p99 during':>12}{'to serving':>12}{'to old gone':>13}{'to done':>10}"
    )
    print(header)
    for f in results:
        print(
            f"{f.name:13}{f.sent:>7}{f.failed:>8}{f.p50_before:>10.1f}ms{f.p99_before:>10.1f}ms"
            f"{f.p50_during:>10.1f}ms{f.p99_during:>10.1f}ms{f.to_serving:>11.2f}s{f.to_old_gone:>12.2f}s"
            f"{f.to_done:>9.2f}s"
        )
    zdd, bash = results
    print(f"\nzdd deploy time / Bash recipe's (echo to done): {zdd.to_done / bash.to_done:.2f} (target < 0.2)")
    print(f"zdd p99 during / p99 before: {zdd.p99_during / zdd.p99_before:.2f} (target < 1.5)")
    print(f"failed: zdd {zdd.failed}, Bash recipe {bash.failed} (target 0)")


if __name__ == "__main__":
    main()
