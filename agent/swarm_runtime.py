"""Docker Swarm's services behind small calls for zdd's blue/green on a cluster (docs/swarm.md, issue 15).

Swarm schedules; zdd switches traffic. Each app has two services used in turn, `zdd-<app>-blue` and
`zdd-<app>-green`, each publishing its own host-mode port (the routing mesh needs IPVS, and one
published port cannot be held by both versions on a node at once). A colour is put (created, or its
whole spec replaced) with the new image and `replicas` tasks, at most one per node; its tasks are then
read with the address of the node each runs on, for zdd's gate, route and drain. A colour that served
is scaled to 0, not removed, so going back to it needs no new service.

`SwarmRuntime` is also the swap's Runtime (agent/swap.py), so the swap algorithm runs unchanged on a
Swarm: a "container" there is a task (its id, `zdd-web-green.2`, its node's address and the colour's
port). Starting the first replica puts the idle colour and waits until Swarm runs all its tasks, one per
node; stopping or removing a version scales its colour to 0.

Works with docker-py 5.0.3 (Debian 12) and 7.x (PyPI): the low-level API of the client it is given.
"""

import contextlib
import logging
import queue
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.auth
import docker.errors
import docker.types
import requests.exceptions

from .config import AppConfig
from .errors import PermanentError, TemporaryError, ZddError
from .reconcile import Found
from .reference import ImageRef, parse_reference
from .registry_auth import Credentials, login_for, refused
from .swap import Container
from .units import rfc3339_epoch

log = logging.getLogger("zdd.swarm")

COLOURS = ("blue", "green")
NOT_A_MANAGER = "the Docker engine at docker_host is not a Swarm manager"
LABEL_APP, LABEL_DEPLOY, LABEL_COLOUR, LABEL_REFERENCE = "zdd.app", "zdd.deploy", "zdd.colour", "zdd.reference"
FAILS_PER_SLOT = 3  # failures of one task slot in a gate that make it a crash, not a hiccup
POLL = 0.2  # between reads of a colour's tasks while Swarm starts or stops them
STOP_MARGIN = 10.0  # on top of stop_timeout: Swarm's own bookkeeping before a stopped task is gone
# A task that exits is started again by Swarm after this long, as `docker run --restart always` would.
RESTART_DELAY_NS = 1_000_000_000
# Task states in Swarm's order; a task past "running" has ended (docker/swarmkit api/types.proto).
ENDED = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
# Ended by the app itself, or it never started: the other ended states are Swarm stopping a task.
EXITED = frozenset({"complete", "failed", "rejected"})


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
    since: float = 0.0  # its state's last change (epoch seconds): when it started, for one that runs
    desired: str = ""  # what Swarm wants of it: running, ready (a restart delay), shutdown, ...
    created: float = 0.0  # when Swarm created it (epoch seconds): the newest task of a slot is its current one

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
    reference: str = ""  # the reference the deploy asked for (label zdd.reference), as zdd records it


def service_name(app: str, colour: str) -> str:
    return f"zdd-{app}-{colour}"


def app_and_colour(service: str) -> tuple[str, str]:
    """`zdd-web-green` -> ("web", "green")."""
    app, _, colour = service.removeprefix("zdd-").rpartition("-")
    return app, colour


def other(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


def _unavailable(err: Exception) -> TemporaryError:
    message = getattr(err, "explanation", None) or str(err)
    if "not a swarm manager" in message:  # retried: `docker swarm init` or a promotion fixes it without zdd
        return TemporaryError(f'{NOT_A_MANAGER}: apps with engine = "swarm" need zdd on a manager node ({message})')
    return TemporaryError(f"Docker engine unavailable: {message}")


def _found(inspect: Callable[[str], dict], key: str) -> dict | None:
    """What the engine says of one object; None when it has no such object."""
    try:
        return inspect(key)
    except docker.errors.NotFound:
        return None
    except (docker.errors.APIError, requests.exceptions.RequestException) as err:
        raise _unavailable(err) from err


def _temporary(err: docker.errors.APIError) -> bool:
    """The engine's own trouble (5xx: no leader, an update out of sequence), not the request's: retried."""
    return err.status_code is None or err.status_code >= 500


def _cpu_nanos(cpus: float | None) -> int | None:
    return None if cpus is None else round(cpus * 1_000_000_000)


class SwarmRuntime:
    """The two services of each app on the Swarm whose manager `client` talks to."""

    def __init__(
        self, client: docker.DockerClient, tick: Callable[[], None] = lambda: None, registry_auth: Path | None = None
    ):
        self.api = client.api
        self.registry_auth = registry_auth  # zdd's logins file (Docker's config.json format), as for one host
        self.tick = tick  # called while it waits for Swarm: the agent pings systemd's watchdog there
        self._started: dict[tuple[str, str], list[Container]] = {}  # (app, deploy) -> its tasks, by slot

    # --- swap.Runtime -------------------------------------------------------------------------------
    def has_image(self, ref: ImageRef) -> bool:
        """Always: every node pulls the image for itself when Swarm gives it a task, not this host."""
        return True

    def free_bytes(self) -> int | None:
        return None  # each node's own disk; a node that cannot pull rejects its task, and the gate says so

    def pull(self, ref: ImageRef, progress: Callable[[int, int], None], stall_timeout: float) -> None:
        """Nothing to do here (has_image is always true): the nodes pull."""

    def image_id(self, ref: ImageRef) -> str:
        """The digest the registry gives the reference now: every node runs that exact image (the service
        names it by digest), even if the tag moves during the deploy."""
        login = self._forward_login(str(ref))
        try:
            return self.api.inspect_distribution(str(ref))["Descriptor"]["digest"]
        except docker.errors.APIError as err:
            why = refused(self.registry_auth, ref.repository, login, str(err.explanation or err))
            if why:
                raise PermanentError(f"{ref}: {why}") from err
            if err.status_code in (401, 403, 404) or "manifest unknown" in str(err.explanation):
                raise PermanentError(f"{ref}: the registry has no such image ({err.explanation or err})") from err
            raise _unavailable(err) from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err

    def start(self, app: AppConfig, image_id: str, ref: ImageRef, deploy_id: str, replica: int = 1) -> Container:
        """Replica 1 puts the idle colour and waits until Swarm runs all `replicas` tasks, one per node (or
        raises PermanentError with the node and Swarm's reason); each replica is then one of those tasks."""
        key = (app.name, deploy_id)
        if replica == 1:
            colour = self.idle_colour(app.name)
            self._wait_until_stopped(app, colour)
            image = pinned(ref, image_id)
            self.put(app, colour, image, str(ref), deploy_id, swarm_port(app, colour))
            try:
                self._started[key] = self._wait_for_tasks(app, colour, image, deploy_id)
            except BaseException:
                # Whatever ended the wait (the manager gone a moment, the agent stopping): the colour goes
                # back to 0 tasks, or the next try would find both colours in use.
                with contextlib.suppress(ZddError):
                    self.scale(app.name, colour, 0)
                raise
        tasks = self._started[key]
        if replica == len(tasks):  # the swap asks for replicas 1..N in turn: the last one ends the deploy's use
            del self._started[key]
        return tasks[replica - 1]

    def _forward_login(self, image: str) -> Credentials | None:
        """What `docker service create --with-registry-auth` does: the login for the image's registry goes
        with every request about it (X-Registry-Auth), and Swarm hands it to the nodes that pull. docker-py
        sends it from its client's logins (AuthConfig, docker-py 4 to 7), so it is put there, or taken out
        when the file no longer has one."""
        login = login_for(self.registry_auth, image, f"{image} on the Swarm")
        logins = self.api._auth_configs
        registry = docker.auth.resolve_repository_name(image)[0]  # the key docker-py looks the login up by
        if login:
            logins.add_auth(registry, login.for_docker())
        else:
            logins.get("auths", {}).pop(registry, None)
        return login

    def keep_running(self, container_id: str) -> None:
        """Nothing to do: the service's restart policy (any) was set when it was put."""

    def replacement(self, container_id: str) -> Container | None:
        """The task Swarm runs in this one's slot after it moved it (its node failed or was drained), once
        that one runs; None while it was not moved or its replacement does not run yet."""
        task = self._task(container_id)
        if task is None or not moved(task):
            return None
        service = self._inspect(task["ServiceID"])
        if service is None:
            return None
        name = service["Spec"]["Name"]
        app, colour = app_and_colour(name)
        port = service["Spec"]["EndpointSpec"]["Ports"][0]["PublishedPort"]
        for other_task in self.tasks(app, colour):
            if other_task.slot == task.get("Slot") and other_task.state == "running" and other_task.node_address:
                return Container(other_task.id, f"{name}.{other_task.slot}", other_task.address(port))
        return None

    def exit_reason(self, container_id: str) -> str | None:
        """Why the task ended ("failed on node2: ..."), None while Swarm still runs it or moves it."""
        task = self._task(container_id)
        if task is None:
            return "is gone from the Swarm"
        if moved(task) and self._wants_slot(task):
            return None  # its node failed or was drained: Swarm runs the slot again on another node
        if task["Status"].get("State") in ENDED or task.get("DesiredState") != "running":
            node = self._node_name(task.get("NodeID", ""))
            error = task["Status"].get("Err") or task["Status"].get("Message", "")
            return f"{task['Status'].get('State')} on {node}" + (f": {error}" if error else "")
        return None

    def is_running(self, container_id: str) -> bool:
        task = self._task(container_id)
        return task is not None and task["Status"].get("State") == "running" and task.get("DesiredState") == "running"

    def stop(self, container_id: str, timeout: float) -> None:
        self.stop_all([container_id], timeout)

    def stop_all(self, container_ids: Sequence[str], timeout: float) -> None:
        """Scale the colours of these tasks to 0 and wait until Swarm has stopped them (SIGTERM, then
        SIGKILL after the service's stop grace period)."""
        services = self._services_of(container_ids)
        for service in services:
            self._scale_service(service, 0)
        deadline = time.monotonic() + timeout + STOP_MARGIN
        while not self._all_ended(container_ids) and time.monotonic() < deadline:
            self.tick()
            time.sleep(POLL)

    def _all_ended(self, task_ids: Sequence[str]) -> bool:
        """Have the tasks' containers stopped (a desired state changes at once, the state only then)?"""
        nodes = self._nodes()
        return all((task := self._task(task_id)) is None or has_ended(task, nodes) for task_id in task_ids)

    def _nodes(self) -> dict[str, Mapping]:
        try:
            return {node["ID"]: node for node in self.api.nodes()}
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err

    def _wants_slot(self, task: Mapping) -> bool:
        """Is the task's slot still wanted (its service not scaled below it)?"""
        service = self._inspect(task["ServiceID"])
        replicas = (service or {}).get("Spec", {}).get("Mode", {}).get("Replicated", {}).get("Replicas", 0)
        return task.get("Slot", 0) <= replicas

    def remove(self, container_id: str) -> None:
        """The task's colour goes to 0 tasks; the service itself stays, for going back to it."""
        for service in self._services_of([container_id]):
            self._scale_service(service, 0)

    def output(self, container_id: str, lines: int) -> str:
        """The task's last `lines` lines of stdout and stderr, with timestamps (Swarm fetches them from
        its node)."""
        try:
            response = self.api._get(
                self.api._url("/tasks/{0}/logs", container_id),
                params={"stdout": 1, "stderr": 1, "timestamps": 1, "tail": lines},
            )
            if response.status_code == 404:
                return ""
            self.api._raise_for_status(response)
        except docker.errors.APIError as err:
            raise _unavailable(err) from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err
        return demultiplex(response.content).decode(errors="replace")

    def stream_output(
        self, container_id: str, follow: bool, since: int | None, tail: int | str, timestamps: bool
    ) -> Iterator[bytes]:
        """The task's stdout and stderr, fetched by Swarm from its node (`docker service logs`, one task);
        with `follow`, until it stops. As docker-py's service_logs, for a task (zdd never sets a TTY)."""
        params = {"stdout": 1, "stderr": 1, "follow": follow, "since": since or 0, "timestamps": timestamps}
        try:
            response = self.api._get(
                self.api._url("/tasks/{0}/logs", container_id), params={**params, "tail": tail}, stream=True
            )
            if response.status_code == 404:
                return
            chunks = self.api._get_result_tty(True, response, False)
            if not follow:
                yield from chunks
                return
            # Swarm never ends a followed stream, not even when the task stops: read it on a thread, and
            # end it here once the task no longer runs (zdd logs -f then goes on with the next version).
            # The socket is shut down, not closed: a close waits for the reading thread's lock.
            raw = self.api._get_raw_response_socket(response)
            try:
                yield from _until(chunks, lambda: self.is_running(container_id))
            finally:
                with contextlib.suppress(OSError):
                    getattr(raw, "_sock", raw).shutdown(socket.SHUT_RDWR)
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err

    def run_release(self, app: AppConfig, image_id: str, ref: ImageRef, deploy_id: str) -> tuple[str, str, bool]:
        raise PermanentError(f"{app.name}: release_command is not supported for an app on a Swarm")

    def exit_code(self, container_id: str) -> int | None:
        """None while it runs; its container's exit code once it ended (-1 if Swarm lost it)."""
        task = self._task(container_id)
        if task is None:
            return -1
        if task["Status"].get("State") not in ENDED:
            return None
        return task["Status"].get("ContainerStatus", {}).get("ExitCode", -1)

    def release_containers(self, app: AppConfig) -> list[tuple[str, str, str]]:
        return []

    # --- the converger's view ------------------------------------------------------------------------
    def containers(self, app: AppConfig, instance: str | None = None) -> list[Found]:
        """Each slot of each colour that has tasks wanted, as its newest task, named `service.slot`: a task
        Swarm runs again in a slot (its node failed, its app exited) has a new id, never a new name, and
        until it runs (a restart delay, a pull on another node) the slot is there, not running. Removing
        one removes its whole colour (`group`): the converger never removes a task of a colour it keeps."""
        found = []
        for colour in self.colours(app.name).values():
            if colour.replicas == 0:
                continue
            try:
                ref = parse_reference(colour.image.split("@", 1)[0], app.image)
            except ZddError:
                ref = None
            digest = colour.image.partition("@")[2]
            slots = newest_per_slot(self._read_tasks({"service": colour.service}), colour.replicas)
            for task in slots:
                found.append(
                    Found(
                        id=task.id,
                        name=f"{colour.service}.{task.slot}",
                        running=task.state == "running" and task.desired == "running",
                        address=task.address(colour.port) if task.node_address else "",
                        tag=ref.version if ref else "",
                        reference=colour.reference,
                        image_id=digest,
                        deploy=colour.deploy_id,
                        since=task.since,
                        group=colour.service,
                    )
                )
        return found

    def ensure_network(self) -> None:
        """Nothing to do: a Swarm app's tasks publish their port on their node; they join no zdd network."""

    # --- the two colours --------------------------------------------------------------------------
    def idle_colour(self, app: str) -> str:
        """The colour a deploy puts: one with no tasks wanted (blue for a first deploy). Both in use means
        a deploy left its work half-done: the converger ends that first."""
        colours = self.colours(app)
        idle = [colour for colour in COLOURS if colour not in colours or colours[colour].replicas == 0]
        if not idle:
            raise TemporaryError(f"{app}: both {service_name(app, 'blue')} and {service_name(app, 'green')} run tasks")
        return idle[0]

    def _wait_for_tasks(self, app: AppConfig, colour: str, image: str, deploy_id: str) -> list[Container]:
        name = service_name(app.name, colour)
        deadline = time.monotonic() + app.start_timeout
        port = swarm_port(app, colour)
        while True:
            ready = serving(self.tasks(app.name, colour), image, app.replicas)
            if ready is not None:
                return [Container(task.id, f"{name}.{task.slot}", task.address(port)) for task in ready]
            refused = given_up(self.failed_tasks(app.name, colour), image)
            if refused:
                task = refused
                raise PermanentError(
                    f"{app.name}: task {name}.{task.slot} {task.state} on {task.node or 'no node'}: {task.error}"
                )
            if time.monotonic() >= deadline:
                tasks = self.tasks(app.name, colour)
                failed = [task for task in self.failed_tasks(app.name, colour) if same_image(task.image, image)]
                states = ", ".join(f"{name}.{t.slot} {t.state} on {t.node or 'no node'}" for t in tasks) or "no task"
                last = f"; last failure on {failed[0].node}: {failed[0].error}" if failed else ""
                raise PermanentError(
                    f"{app.name}: Swarm did not run {app.replicas} tasks of {image}, one per node, within "
                    f"start_timeout {app.start_timeout:g}s ({states}{last})"
                )
            self.tick()
            time.sleep(POLL)

    def _wait_until_stopped(self, app: AppConfig, colour: str) -> None:
        """Until the idle colour's last tasks (a version that failed its gate a moment ago) have ended:
        while one stops it still holds the colour's port on its node, and a new task there would fail."""
        deadline = time.monotonic() + app.stop_timeout + STOP_MARGIN
        while time.monotonic() < deadline:
            try:
                raw = self.api.tasks(filters={"service": service_name(app.name, colour)})
            except docker.errors.NotFound:
                return
            except (docker.errors.APIError, requests.exceptions.RequestException) as err:
                raise _unavailable(err) from err
            nodes = self._nodes()
            if all(has_ended(entry, nodes) for entry in raw):
                return
            self.tick()
            time.sleep(POLL)

    def _scale_service(self, service: str, replicas: int) -> None:
        self.scale(*app_and_colour(service), replicas)

    def _services_of(self, task_ids: Sequence[str]) -> list[str]:
        services = []
        for task_id in task_ids:
            task = self._task(task_id)
            if task is None:
                continue
            service = self._inspect(task["ServiceID"])
            if service is None:
                continue
            name = service["Spec"]["Name"]
            if name not in services:
                services.append(name)
        return services

    def _task(self, task_id: str) -> dict | None:
        return _found(self.api.inspect_task, task_id)

    def _node_name(self, node_id: str) -> str:
        try:
            return self.api.inspect_node(node_id)["Description"]["Hostname"]
        except (docker.errors.APIError, requests.exceptions.RequestException, KeyError):
            return node_id[:12] or "no node"

    def put(self, app: AppConfig, colour: str, image: str, reference: str, deploy_id: str, port: int) -> None:
        """Create the colour's service, or replace its whole spec, to run `image` as `app.replicas` tasks
        publishing `port` on their nodes. Swarm starts the tasks; `tasks()` follows them."""
        name = service_name(app.name, colour)
        self._forward_login(image)
        container = docker.types.ContainerSpec(
            image,
            args=list(app.command) or None,  # as `docker run IMAGE CMD...`: the image's entrypoint stays
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
            if _temporary(err):
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
            if replicas:  # a node may pull it again; a stop must not depend on the logins file
                self._forward_login(spec["TaskTemplate"]["ContainerSpec"]["Image"])
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
            if _temporary(err):
                raise _unavailable(err) from err
            raise PermanentError(f"{app}: cannot scale service {name} to {replicas}: {err.explanation or err}") from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err

    def colours(self, app: str) -> dict[str, Colour]:
        """The app's services by colour, as their specs stand (a colour never put is absent)."""
        found = {}
        for colour in COLOURS:
            name = service_name(app, colour)
            current = self._inspect(name)
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
                spec.get("Labels", {}).get(LABEL_REFERENCE, ""),
            )
        return found

    def tasks(self, app: str, colour: str) -> list[Task]:
        """The colour's tasks that Swarm wants running (desired state running), each with its node."""
        found = self._read_tasks({"service": service_name(app, colour), "desired-state": "running"})
        return sorted(found, key=lambda task: task.slot)

    def failed_tasks(self, app: str, colour: str) -> list[Task]:
        """Tasks of the colour that Swarm gave up on (failed or rejected), newest first: why a gate fails."""
        found = self._read_tasks({"service": service_name(app, colour)}, newest_first=True)
        return [task for task in found if task.state in ("failed", "rejected")]

    def _read_tasks(self, filters: dict, newest_first: bool = False) -> list[Task]:
        try:
            raw = self.api.tasks(filters=filters)
            nodes = {node["ID"]: node for node in self.api.nodes()}
        except docker.errors.NotFound:
            return []
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        if newest_first:
            raw.sort(key=lambda entry: entry.get("Status", {}).get("Timestamp", ""), reverse=True)
        return [task_of(entry, nodes) for entry in raw]

    def remove_service(self, app: str, colour: str) -> None:
        try:
            self.api.remove_service(service_name(app, colour))
        except docker.errors.NotFound:
            pass
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err

    def _inspect(self, service: str) -> dict | None:
        """A service, by name or id."""
        return _found(self.api.inspect_service, service)


def _until(chunks: Iterator[bytes], going_on: Callable[[], bool], every: float = 1.0) -> Iterator[bytes]:
    """The chunks of a stream that may never end, for as long as `going_on()` (asked every `every` s of
    silence) says so."""
    received: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for chunk in chunks:
                received.put(chunk)
        except Exception:  # the stream closed under it (the caller ended it): nothing left to read
            pass
        received.put(None)

    threading.Thread(target=read, name="zdd-task-logs", daemon=True).start()
    while True:
        try:
            chunk = received.get(timeout=every)
        except queue.Empty:
            if not going_on():
                return
            continue
        if chunk is None:
            return
        yield chunk


def swarm_port(app: AppConfig, colour: str) -> int:
    """The port the colour publishes on every node: swarm_ports[0] for blue, [1] for green."""
    return app.swarm_ports[COLOURS.index(colour)]


def pinned(ref: ImageRef, digest: str) -> str:
    """`registry/repo:tag@sha256:...`: what the service runs, the same image on every node."""
    return f"{ref}@{digest}" if "@" not in str(ref) else str(ref)


def demultiplex(raw: bytes) -> bytes:
    """Docker's log stream of a task without a TTY: frames of an 8-byte header (stream, 0, 0, 0, size)."""
    out, at = bytearray(), 0
    while at + 8 <= len(raw):
        size = struct.unpack_from(">I", raw, at + 4)[0]
        out += raw[at + 8 : at + 8 + size]
        at += 8 + size
    return bytes(out)


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
        since=rfc3339_epoch(status.get("Timestamp", "")),
        desired=entry.get("DesiredState", ""),
        created=rfc3339_epoch(entry.get("CreatedAt", "")),
    )


def newest_per_slot(tasks: Sequence[Task], replicas: int) -> list[Task]:
    """The current task of each slot 1..replicas, by slot: the one Swarm created last (a task it runs
    again is a new one in the same slot; the old ones stay in its history)."""
    newest: dict[int, Task] = {}
    for task in tasks:
        if 1 <= task.slot <= replicas and (task.slot not in newest or task.created > newest[task.slot].created):
            newest[task.slot] = task
    return [newest[slot] for slot in sorted(newest)]


def moved(task: Mapping) -> bool:
    """Did Swarm stop wanting the task without the app exiting (its node failed or was drained)? It then
    runs a new task in the same slot on another node."""
    return task.get("DesiredState") != "running" and task.get("Status", {}).get("State") not in EXITED


def has_ended(task: Mapping, nodes: Mapping[str, Mapping]) -> bool:
    """Has the task stopped, or is it on a node Swarm has lost? That node's engine stops it when it comes
    back (Swarm no longer wants it), and until then nothing can reach it."""
    if task.get("Status", {}).get("State") in ENDED:
        return True
    return nodes.get(task.get("NodeID", ""), {}).get("Status", {}).get("State") == "down"


def given_up(failed: Sequence[Task], image: str) -> Task | None:
    """The task that ends a gate at once: one of `image` that no node would take (rejected: it cannot
    pull), or a slot whose app exited FAILS_PER_SLOT times (it crashes as it starts). A task that failed
    to start for another reason is left to Swarm's restarts until start_timeout: a node may hold the
    colour's port a few seconds longer for a task of its last version."""
    tasks = [task for task in failed if same_image(task.image, image)]
    rejected = [task for task in tasks if task.state == "rejected"]
    if rejected:
        return rejected[0]
    crashed = [task for task in tasks if "non-zero exit" in task.error]
    for task in crashed:
        if sum(other.slot == task.slot for other in crashed) >= FAILS_PER_SLOT:
            return task
    return None


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
