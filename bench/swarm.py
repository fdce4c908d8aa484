"""Benchmark: a deploy v1 -> v2 of an app with 2 replicas across a real 3-node Swarm under load, by Swarm's
own rolling update and by zdd, in one run on the same Swarm (issue 15's comparison).

    .venv/bin/python -m bench.swarm [--caddy /usr/bin/caddy] [--replicas 2] [--steady 3]

- Swarm's best today: one service, host-mode port (the routing mesh needs IPVS), at most one task per
  node, `docker service update --update-order start-first` (each new task starts on a node without
  one, then an old task stops), with Caddy in front of every node's port: retries of failed dials for
  5 s, active health checks of /up every second, passive ones.
- zdd: two services used in turn, zdd's swap (agent/swap.py with agent/swarm_runtime.py): the new
  colour's tasks gated, Caddy switched by `zdd dns`'s SRV answer, the old tasks drained, then stopped.

Prints, for each, the requests sent and failed (by kind, with the first errors, nothing replayed), the
time from the command to the new version answering every request, and to done. Not part of the tests:
the zero-failed promise itself is asserted in tests/swarm.
"""

import argparse
import tempfile
import time
from pathlib import Path

import docker
import docker.types

from tests.support import images
from tests.support.caddy_server import CaddyServer
from tests.support.load import KINDS, LoadClient
from tests.support.swarm import Swarm, swarm, zdd_on_swarm

BASELINE_PORT = 18401
BASELINE_SNIPPET = """reverse_proxy {upstreams} {{
	lb_try_duration 5s
	lb_try_interval 250ms
	fail_duration 30s
	health_uri /up
	health_interval 1s
	health_timeout 1s
}}
"""


def wait_until(done, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:g}s")
        time.sleep(0.2)


def report(name: str, load: LoadClient, command: float, done: float) -> None:
    """The failures, and when the last answer of v1 was asked for: from then on, v2 answered all."""
    last_old = max((r.started for r in load.results if r.body == "v1"), default=command)
    failed = load.failures
    by_kind = ", ".join(f"{sum(r.kind == k for r in failed)} {k}" for k in KINDS)
    before = [r for r in load.results if r.started < command]
    rate = len(before) / max(0.001, command - min((r.started for r in before), default=command))
    print(f"{name}: {len(load.results)} requests, {len(failed)} failed ({by_kind}); {rate:.0f}/s before the command")
    for result in failed[:5]:
        print(f"    {result.kind}: {result.error or result.status} ({result.started - command:+.2f}s)")
    serving = max(0.0, last_old - command)
    print(f"    v2 answers every request {serving:.2f}s after the command; done in {done - command:.2f}s")


def swarm_rolling_update(cluster: Swarm, workdir: Path, caddy_binary: str, v1: str, v2: str, args) -> None:
    manager = cluster.manager.client().api
    template = docker.types.TaskTemplate(
        docker.types.ContainerSpec(v1),
        restart_policy=docker.types.RestartPolicy(condition="any"),
        placement=docker.types.Placement(maxreplicas=1),
    )
    service = manager.create_service(
        template,
        name="baseline-web",
        mode=docker.types.ServiceMode("replicated", replicas=args.replicas),
        update_config=docker.types.UpdateConfig(parallelism=1, order="start-first"),
        endpoint_spec=docker.types.EndpointSpec(ports={BASELINE_PORT: (8080, "tcp", "host")}),
    )["ID"]
    snippet = workdir / "baseline.caddy"
    upstreams = " ".join(f"{node.address}:{BASELINE_PORT}" for node in cluster.nodes)
    snippet.write_text(BASELINE_SNIPPET.format(upstreams=upstreams))
    caddy = CaddyServer(caddy_binary, workdir, snippet)
    try:
        wait_until(
            lambda: (
                sum(t["Status"]["State"] == "running" for t in manager.tasks(filters={"service": service}))
                >= args.replicas
            ),
            "the baseline service's tasks running",
        )
        caddy.start()
        time.sleep(2)  # Caddy's first active health checks
        with LoadClient(caddy.port) as load:
            time.sleep(args.steady)
            spec = manager.inspect_service(service)
            template = spec["Spec"]["TaskTemplate"]
            template["ContainerSpec"]["Image"] = v2
            command = time.monotonic()
            manager.update_service(
                service,
                spec["Version"]["Index"],
                template,
                name="baseline-web",
                mode=spec["Spec"]["Mode"],
                update_config=spec["Spec"]["UpdateConfig"],
                endpoint_spec=spec["Spec"]["EndpointSpec"],
            )
            wait_until(
                lambda: manager.inspect_service(service).get("UpdateStatus", {}).get("State") == "completed",
                "Swarm's rolling update completed",
            )
            done = time.monotonic()
            time.sleep(args.steady)
        report("Swarm's rolling update (start-first), Caddy in front", load, command, done)
    finally:
        caddy.stop()
        manager.remove_service(service)


def zdd_deploy(cluster: Swarm, workdir: Path, caddy_binary: str, repository: str, args) -> None:
    with zdd_on_swarm(cluster, workdir, caddy_binary, repository, replicas=args.replicas) as stack:
        v1 = stack.deploy("v1", None, 1)
        with LoadClient(stack.caddy.port) as load:
            time.sleep(args.steady)
            command = time.monotonic()
            stack.deploy("v2", v1, 2)
            done = time.monotonic()
            time.sleep(args.steady)
        report("zdd (blue/green services, SRV switch, drain)", load, command, done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--caddy", default="/usr/bin/caddy", help="the Caddy binary (default: Debian's 2.6.2)")
    parser.add_argument("--replicas", type=int, default=2, help="tasks per version, on 3 nodes (at most 2)")
    parser.add_argument("--steady", type=float, default=3.0, help="seconds of load before and after each deploy")
    args = parser.parse_args()
    host = docker.from_env()
    with tempfile.TemporaryDirectory(prefix="zdd-bench-swarm-") as tmp, swarm(host, Path(tmp)) as cluster:
        workdir = Path(tmp)
        v1, v2 = (cluster.registry.push(host, images.build(host, tag)) for tag in ("v1", "v2"))
        print(f"a Swarm of {len(cluster.nodes)} nodes, {args.replicas} replicas, Caddy {args.caddy}")
        (workdir / "baseline").mkdir()
        swarm_rolling_update(cluster, workdir / "baseline", args.caddy, v1, v2, args)
        (workdir / "zdd").mkdir()
        zdd_deploy(cluster, workdir / "zdd", args.caddy, v1.rpartition(":")[0], args)


if __name__ == "__main__":
    main()
