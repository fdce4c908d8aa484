"""Many deploys in a row under a load of every kind, and every request counted: does zdd drop anything?

    .venv/bin/python -m bench.deploys [--caddy /usr/bin/caddy] [--deploys 1000]

Runs Caddy, `zdd dns` and `zdd run` on this machine (as the demo does), deploys v1, then alternates
between two versions N times with `zdd deploy --wait`, while clients send keep-alive GETs, keep-alive
POSTs (never replayed), GETs on new connections and slow requests (in flight at every switch).
Prints the requests per kind, every failure with its error and time, the deploy times and the agent's
memory. Long (about 2.5 s a deploy): the test suite runs the same with 100 deploys
(tests/integration/test_long_use.py).
"""

import argparse
import collections
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from bench.bench import zdd_stack
from tests.integration.test_long_use import rss_kib
from tests.support import images
from tests.support.load import KINDS, LoadClient

VERSIONS = ("abrupt1", "abrupt2")  # busybox httpd dies at once on SIGTERM: only the drain protects requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caddy", default="/usr/bin/caddy")
    parser.add_argument("--deploys", type=int, default=1000)
    args = parser.parse_args()
    client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    for tag in VERSIONS:
        images.build(client, tag, "abrupt")
    version = subprocess.run([args.caddy, "version"], capture_output=True, text=True).stdout.split()[0]
    migrate = Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip()
    keys = {"health_successes": 2, "health_interval": "50ms", "drain_timeout": "5s", "stop_timeout": "2s"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        zdd_stack(client, args.caddy, Path(tmp), f"zdd-bench-deploys-{os.getpid()}", **keys) as (caddy, agent),
    ):
        assert agent.cli("deploy", VERSIONS[0], "--wait").returncode == 0, agent.log
        took: list[float] = []
        rss = {}
        started = time.monotonic()
        with LoadClient(caddy.port) as load:
            time.sleep(2)
            for i in range(1, args.deploys + 1):
                tag = VERSIONS[i % 2]
                t = time.monotonic()
                result = agent.cli("deploy", tag, "--wait", "--timeout", "60", timeout=90)
                took.append(time.monotonic() - t)
                if result.returncode != 0:
                    print(f"deploy {i} of {tag} failed: {result.stderr.strip()}")
                    return 1
                if i in (10, args.deploys):
                    rss[i] = rss_kib(agent.process.pid)
                if i % 50 == 0:
                    print(f"{i} deploys, {len(load.results)} requests, {len(load.failures)} failed", flush=True)
            time.sleep(2)
        elapsed = time.monotonic() - started
        reloads = caddy.log.read_text(errors="replace").count('"load complete"')
    kinds = collections.Counter(r.kind for r in load.results)
    failed = collections.Counter(r.kind for r in load.failures)
    print(
        f"\n{args.deploys} deploys in a row under load, Caddy {version}, net.ipv4.tcp_migrate_req={migrate}, "
        f"{elapsed:.0f}s"
    )
    for kind in KINDS:
        print(f"  {kind:10} {kinds[kind]:>8} sent {failed[kind]:>5} failed")
    print(f"  {'all':10} {len(load.results):>8} sent {len(load.failures):>5} failed, none retried")
    for r in load.failures[:20]:
        print(f"  failure: {r.kind} at +{r.started - started:.1f}s: {r.error or f'HTTP {r.status}'}")
    print(
        f"deploy --wait: median {statistics.median(took):.2f}s, max {max(took):.2f}s; "
        f"agent RSS {rss[min(rss)]} KiB after {min(rss)} deploys, {rss[args.deploys]} KiB after {args.deploys}; "
        f"Caddy config loads during the run: {reloads} (the first deploy's, before the load)"
    )
    return 1 if load.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
