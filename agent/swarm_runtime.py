"""Docker Swarm's services behind small calls for zdd's blue/green on a cluster (docs/swarm.md, issue 15).

Swarm schedules; zdd switches traffic. Each app has two services used in turn, `zdd-<app>-blue` and
`zdd-<app>-green`, each publishing its own host-mode port (the routing mesh needs IPVS, and one
published port cannot be held by both versions on a node at once). A colour is put (created, or its
whole spec replaced) with the new image and `replicas` tasks, at most one per node; its tasks are then
read with the address of the node each runs on, for zdd's gate, route and drain. A colour that served
is scaled to 0, not removed, so going back to it needs no new service.

Works with docker-py 5.0.3 (Debian 12) and 7.x (PyPI): the low-level API only, at a fixed version.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import docker
import docker.errors
import docker.types
import requests.exceptions

from .config import AppConfig
from .errors import PermanentError, TemporaryError

log = logging.getLogger("zdd.swarm")

COLOURS = ("blue", "green")
LABEL_APP, LABEL_DEPLOY, LABEL_COLOUR, LABEL_REFERENCE = "zdd.app", "zdd.deploy", "zdd.colour", "zdd.reference"
API_VERSION = "1.41"  # Docker 20.10, Debian 12's docker.io; later engines still serve it
API_TIMEOUT = 60
# A task that exits is started again by Swarm after this long, as `docker run --restart always` would.
RESTART_DELAY_NS = 1_000_000_000
# Task states in Swarm's order; a task past "running" has ended (docker/swarmkit api/types.proto).
ENDED = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})


@dataclass(frozen=True)
class Task:
    """One of a colour's tasks as Swarm last reported it, with the node it was given to."""

    id: str
    slot: int
    node: str  # the node's host name, for messages
    node_address: str  # Swarm's address of the node (Status.Addr): where its host-mode port is published
    state: str  # Swarm's task state: new, pending, ..., starting, running, failed, rejected, ...
    error: str  # Swarm's reason for a failed or rejected task ("No such image: ...")
    image: str  # the image the task runs, as the spec names it (Swarm may add @sha256:...)

    def address(self, port: int) -> str:
        return f"{self.node_address}:{port}"


@dataclass(frozen=True)
class Colour:
    """What one of an app's two services is set to run."""

    name: str
    service: str
    deploy_id: str
    image: str
    replicas: int
    port: int


def service_name(app: str, colour: str) -> str:
    return f"zdd-{app}-{colour}"


def other(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


def _unavailable(err: Exception) -> TemporaryError:
    return TemporaryError(f"Docker engine unavailable: {getattr(err, 'explanation', None) or err}")


def _cpu_nanos(cpus: float | None) -> int | None:
    return None if cpus is None else int(cpus * 1_000_000_000)


class SwarmRuntime:
    """The two services of each app on the Swarm whose manager `client` talks to."""

    def __init__(self, client: docker.DockerClient):
        self.api = client.api

    def put(self, app: AppConfig, colour: str, image: str, reference: str, deploy_id: str, port: int) -> None:
        """Create the colour's service, or replace its whole spec, to run `image` as `app.replicas` tasks
        publishing `port` on their nodes. Swarm starts the tasks; `tasks()` follows them."""
        name = service_name(app.name, colour)
        container = docker.types.ContainerSpec(
            image,
            command=list(app.command) or None,
            env=[f"{key}={value}" for key, value in app.env.items()],
            labels={**app.labels, LABEL_APP: app.name, LABEL_DEPLOY: deploy_id},
            stop_grace_period=int(app.stop_timeout * 1_000_000_000),
        )
        template = docker.types.TaskTemplate(
            container,
            resources=docker.types.Resources(cpu_limit=_cpu_nanos(app.cpus), mem_limit=app.memory),
            restart_policy=docker.types.RestartPolicy(condition="any", delay=RESTART_DELAY_NS),
            # One task per node: a node publishes the colour's port once.
            placement=docker.types.Placement(maxreplicas=1),
        )
        labels = {LABEL_APP: app.name, LABEL_COLOUR: colour, LABEL_DEPLOY: deploy_id, LABEL_REFERENCE: reference}
        mode = docker.types.ServiceMode("replicated", replicas=app.replicas)
        ports = docker.types.EndpointSpec(ports={port: (app.port, "tcp", "host")})
        try:
            current = self._inspect(name)
            if current is None:
                self.api.create_service(template, name=name, labels=labels, mode=mode, endpoint_spec=ports)
            else:
                self.api.update_service(
                    current["ID"],
                    current["Version"]["Index"],
                    template,
                    name=name,
                    labels=labels,
                    mode=mode,
                    endpoint_spec=ports,
                )
        except docker.errors.APIError as err:
            if err.status_code and err.status_code >= 500 and "rpc error" not in str(err.explanation):
                raise _unavailable(err) from err
            raise PermanentError(f"{app.name}: cannot put service {name} ({image}): {err.explanation or err}") from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err
        log.info(
            "%s: service %s set to %d x %s on port %d (deploy %s)", app.name, name, app.replicas, image, port, deploy_id
        )

    def scale(self, app: str, colour: str, replicas: int) -> None:
        """Set the colour's task count; 0 stops its tasks (Swarm sends SIGTERM, then SIGKILL after the
        service's stop grace period) and keeps the service."""
        name = service_name(app, colour)
        try:
            current = self._inspect(name)
            if current is None:
                return
            spec = current["Spec"]
            self.api.update_service(
                current["ID"],
                current["Version"]["Index"],
                spec["TaskTemplate"],
                name=name,
                labels=spec.get("Labels"),
                mode=docker.types.ServiceMode("replicated", replicas=replicas),
                endpoint_spec=spec.get("EndpointSpec"),
            )
        except docker.errors.APIError as err:
            raise PermanentError(f"{app}: cannot scale service {name} to {replicas}: {err.explanation or err}") from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err

    def colours(self, app: str) -> dict[str, Colour]:
        """The app's services by colour, as their specs stand (a colour never put is absent)."""
        found = {}
        for colour in COLOURS:
            name = service_name(app, colour)
            try:
                current = self._inspect(name)
            except requests.exceptions.RequestException as err:
                raise _unavailable(err) from err
            if current is None:
                continue
            spec = current["Spec"]
            ports = spec.get("EndpointSpec", {}).get("Ports", [])
            found[colour] = Colour(
                colour,
                name,
                spec.get("Labels", {}).get(LABEL_DEPLOY, ""),
                spec["TaskTemplate"]["ContainerSpec"]["Image"],
                spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0),
                ports[0]["PublishedPort"] if ports else 0,
            )
        return found

    def tasks(self, app: str, colour: str) -> list[Task]:
        """The colour's tasks that Swarm wants running (desired state running), each with its node."""
        name = service_name(app, colour)
        try:
            raw = self.api.tasks(filters={"service": name, "desired-state": "running"})
            nodes = {node["ID"]: node for node in self.api.nodes()}
        except docker.errors.NotFound:
            return []
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        return sorted((task_of(entry, nodes) for entry in raw), key=lambda task: task.slot)

    def failed_tasks(self, app: str, colour: str) -> list[Task]:
        """Tasks of the colour that Swarm gave up on (failed or rejected), newest first: why a gate fails."""
        name = service_name(app, colour)
        try:
            raw = self.api.tasks(filters={"service": name})
            nodes = {node["ID"]: node for node in self.api.nodes()}
        except docker.errors.NotFound:
            return []
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        ended = [entry for entry in raw if entry.get("Status", {}).get("State") in ("failed", "rejected")]
        ended.sort(key=lambda entry: entry.get("Status", {}).get("Timestamp", ""), reverse=True)
        return [task_of(entry, nodes) for entry in ended]

    def remove(self, app: str, colour: str) -> None:
        try:
            self.api.remove_service(service_name(app, colour))
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err

    def _inspect(self, name: str) -> dict | None:
        try:
            return self.api.inspect_service(name)
        except docker.errors.NotFound:
            return None


def task_of(entry: Mapping, nodes: Mapping[str, Mapping]) -> Task:
    """A task from the engine's JSON; a task not yet given a node has node "" and address ""."""
    status = entry.get("Status", {})
    node = nodes.get(entry.get("NodeID", ""), {})
    return Task(
        id=entry["ID"],
        slot=entry.get("Slot", 0),
        node=node.get("Description", {}).get("Hostname", ""),
        node_address=node.get("Status", {}).get("Addr", ""),
        state=status.get("State", ""),
        error=status.get("Err", ""),
        image=entry.get("Spec", {}).get("ContainerSpec", {}).get("Image", ""),
    )


def serving(tasks: Sequence[Task], image: str, replicas: int) -> list[Task] | None:
    """The tasks to gate once Swarm runs all `replicas` of `image`, one per node; None while it does not yet."""
    running = [
        task for task in tasks if task.state == "running" and same_image(task.image, image) and task.node_address
    ]
    if len(running) < replicas or len({task.node_address for task in running}) < replicas:
        return None
    return running[:replicas]


def same_image(spec: str, image: str) -> bool:
    """Swarm pins a task's image to its digest (`name:tag@sha256:...`): the name before it is what was asked."""
    return spec == image or spec.split("@", 1)[0] == image
