"""A real demo on this machine: Caddy + an example app, v1 -> v2 under load, and the failed-request count.

    .venv/bin/python -m bench.demo [--caddy /usr/bin/caddy]

Needs a running dockerd and Caddy (see README). Everything lives in a temporary directory and is
removed afterwards; nothing is sent anywhere but loopback and zdd's own Docker network.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import docker

from bench.bench import wait
from tests.support import images
from tests.support.agent_process import AgentProcess, write_config
from tests.support.caddy_server import CaddyServer
from tests.support.load import LoadClient


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caddy", default="/usr/bin/caddy")
    args = parser.parse_args()
    client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    print("building the example app, versions v1 and v2 (busybox httpd, FROM scratch)")
    for tag in ("v1", "v2"):
        images.build(client, tag)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        state = workdir / "state"
        state.mkdir()
        caddy = CaddyServer(args.caddy, workdir, state / "caddy" / "web.caddy")
        config = write_config(
            workdir / "zdd.toml",
            state,
            caddy.admin,
            caddy.caddyfile,
            "zdd-demo",
            {"web": {"image": images.REPOSITORY, "port": 8080, "health_path": "/up"}},
        )
        print(f"\nthe user's Caddyfile ({caddy.caddyfile}):\n{caddy.caddyfile.read_text()}")
        agent = AgentProcess(config, state, workdir)
        agent.start(wait_ready=False)
        wait(lambda: (state / "caddy" / "web.caddy").exists())
        caddy.start()
        try:
            agent.notify.wait_for("READY=1")
            print(f"zdd run is ready; the site {caddy.url} answers: {caddy.get()}")
            print("$ zdd deploy v1 --wait")
            print(agent.cli("deploy", "v1", "--wait").stdout.strip())
            with LoadClient(caddy.port) as load:
                time.sleep(2)
                print(f"\nunder load, as a user would: echo v2 > {state}/queue")
                agent.echo("v2")
                wait(lambda: "last deploy v2: succeeded" in agent.cli("status").stdout, timeout=120)
                time.sleep(2)
            print("\nwhat zdd logged:")
            print("\n".join("  " + line for line in agent.log.splitlines() if "web:" in line))
            print(f"\n$ zdd status\n{agent.cli('status').stdout.strip()}")
            print(f"\nthe site now answers: {caddy.get()}")
            print(f"load during the deploy: {load.summary()}")
            print(f"FAILED REQUESTS: {len(load.failures)}")
            return 1 if load.failures else 0
        finally:
            agent.close()
            caddy.stop()
            for c in client.containers.list(all=True, filters={"label": "zdd.app=web"}):
                c.remove(force=True)
            for n in client.networks.list(names=["zdd-demo"]):
                n.remove()


if __name__ == "__main__":
    raise SystemExit(main())
