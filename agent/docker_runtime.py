"""Docker behind the swap's Runtime protocol. The only module that imports the docker SDK.

Works with docker-py 5.0.3 (Debian 12) and 7.x (PyPI): no Container.health, explicit base_url,
low-level streaming pull with every message checked for an error.
"""

import logging
import os
import pwd
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from .config import AppConfig
from .errors import ConfigError, PermanentError, TemporaryError, ZddError
from .pull_progress import PullTally
from .reconcile import Found
from .reference import ImageRef
from .registry_auth import Credentials, login_for, refused
from .swap import Container
from .units import rfc3339_epoch

log = logging.getLogger("zdd.docker")

LABEL_APP, LABEL_TAG, LABEL_DEPLOY, LABEL_REFERENCE = "zdd.app", "zdd.tag", "zdd.deploy", "zdd.reference"
LABEL_INSTANCE = "zdd.instance"  # which agent (state dir) owns the container
LABEL_RELEASE = "zdd.release"  # a one-off container of a deploy's release command; the value is the deploy id
# What Caddy dials is fixed when the container starts: a later edit of apps.NAME.port or `network` applies
# to the next deploy, never to a container that already runs (its address is read back from these).
LABEL_PORT, LABEL_NETWORK = "zdd.port", "zdd.network"
API_TIMEOUT = 60  # seconds for one Docker API call; stop adds the container's stop timeout
# A fixed API version: no call at construction (the agent starts, and retries, while dockerd is down).
# 1.41 is Docker 20.10 (Debian 12's docker.io); later engines still serve it.
API_VERSION = "1.41"


# requests.exceptions.RequestException: a refused or reset connection, and docker-py's own timeout
# (ReadTimeout) against a hung dockerd: an outage, retried after convergence, never a crash.
def _unavailable(err: Exception) -> TemporaryError:
    if "Permission denied" in str(err):
        user = pwd.getpwuid(os.geteuid()).pw_name
        return TemporaryError(
            f"Docker engine: permission denied on its socket: user {user} must be in group docker "
            f"(adduser {user} docker; the package does it for zdd), then restart zdd"
        )
    return TemporaryError(f"Docker engine unavailable: {err}")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as `docker run --env-file` reads them: no quotes processing, # comments."""
    env = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"env_file {path}: {err.strerror}") from err
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"env_file {path}:{number}: expected KEY=VALUE")
        env[key.strip()] = value
    return env


class DockerRuntime:
    def __init__(self, base_url: str, network: str, instance: str, registry_auth: Path | None = None):
        self.network, self.instance, self.registry_auth = network, instance, registry_auth
        try:
            self.client = docker.DockerClient(base_url=base_url, version=API_VERSION, timeout=API_TIMEOUT)
        except docker.errors.DockerException as err:
            raise _unavailable(err) from err

    # --- images -------------------------------------------------------------------------------
    def has_image(self, ref: ImageRef) -> bool:
        try:
            self.client.images.get(str(ref))
            return True
        except docker.errors.ImageNotFound:
            return False
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err

    def free_bytes(self) -> int | None:
        """Free space in Docker's data root (None if it cannot be read, e.g. a remote engine)."""
        try:
            root = self.client.info().get("DockerRootDir", "")
            stats = os.statvfs(root)
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        except OSError as err:
            log.debug("cannot read free space of Docker's data root: %s", err)
            return None
        return stats.f_bavail * stats.f_frsize

    def image_id(self, ref: ImageRef) -> str:
        try:
            return self.client.images.get(str(ref)).id
        except docker.errors.ImageNotFound:
            raise PermanentError(f"image {ref} is not on this host") from None
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err

    def pull(self, ref: ImageRef, progress: Callable[[int, int], None], stall_timeout: float = 0.0) -> None:
        """Blocks while the pull runs, calling `progress(bytes downloaded, bytes to download)` on every
        message; `stall_timeout` is enforced by the caller (ticking.TickingRuntime), which stops waiting
        for a pull that stalls."""
        # A reference with a tag and a digest is pulled by digest: the digest is what will run.
        version = ref.digest or ref.tag or "latest"
        login = self._login(ref)
        auth = login.for_docker() if login else None
        tally = PullTally()
        try:
            for message in self.client.api.pull(
                ref.repository, tag=version, stream=True, decode=True, auth_config=auth
            ):
                progress(*tally.update(message))
                if "error" in message:
                    raise self._pull_error(ref, message.get("error") or str(message), login)
        except docker.errors.NotFound as err:
            raise self._pull_error(ref, f"not found in the registry ({err.explanation})", login) from err
        except docker.errors.APIError as err:
            raise self._pull_error(ref, str(err.explanation or err), login) from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err

    def _login(self, ref: ImageRef) -> Credentials | None:
        return login_for(self.registry_auth, ref.repository, f"pull {ref}")

    def _pull_error(self, ref: ImageRef, message: str, login: Credentials | None) -> Exception:
        why = refused(self.registry_auth, ref.repository, login, message)
        return PermanentError(f"pull {ref}: {why}") if why else _pull_error(ref, message)

    def remove_image(self, reference: str, image_id: str) -> str:
        """Remove the name zdd deployed an image by ("removed"), only while it still means that image;
        Docker deletes the image with its last name. Returns what happened, for the log."""
        try:
            try:
                named = self.client.images.get(reference)
            except docker.errors.ImageNotFound:
                named = None
            if named is not None and named.id == image_id:
                self.client.images.remove(reference)
                return "removed"
            # The name is gone or was moved to another image (a tag pushed again): the old image is
            # zdd's to delete only if nothing names it any more.
            image = self.client.images.get(image_id)
            if image.tags:
                return f"kept: still named {', '.join(image.tags)}"
            self.client.images.remove(image_id)
            return "removed"
        except docker.errors.ImageNotFound:
            return "gone"
        except docker.errors.APIError as err:
            if err.status_code == 409:  # a container, zdd's or anyone's, still uses it
                return f"kept: {err.explanation or err}"
            raise _unavailable(err) from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err

    # --- containers -----------------------------------------------------------------------------
    def ensure_network(self) -> None:
        try:
            if not self.network_exists(self.network):
                self.client.networks.create(self.network, driver="bridge", labels={"zdd.managed": "true"})
                log.info("created Docker network %s", self.network)
        except docker.errors.APIError as err:
            raise TemporaryError(f"Docker network {self.network}: {err.explanation or err}") from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err

    def network_exists(self, name: str) -> bool:
        try:
            # Docker's name filter matches part of a name ("db" finds "postgres_db"): compare exactly.
            return any(network.name == name for network in self.client.networks.list(names=[name]))
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err

    def manages_swarm(self) -> bool:
        """Is this engine a Swarm manager (`docker info`: where services are created and tasks read)?"""
        try:
            return bool(self.client.info().get("Swarm", {}).get("ControlAvailable"))
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err

    def _labels(self, app: AppConfig, ref: ImageRef, deploy_id: str) -> dict[str, str]:
        return {
            **app.labels,
            LABEL_APP: app.name,
            LABEL_TAG: ref.version,
            LABEL_DEPLOY: deploy_id,
            LABEL_REFERENCE: str(ref),
            LABEL_INSTANCE: self.instance,
            LABEL_PORT: str(app.port),
            LABEL_NETWORK: self.network,
        }

    def _create(
        self, app: AppConfig, image_id: str, name: str, labels: dict[str, str], command: tuple[str, ...]
    ) -> "docker.models.containers.Container":
        """A container of the app as configured (env, volumes, limits, networks), created, not started."""
        env = read_env_file(app.env_file) if app.env_file else {}
        env.update(app.env)
        try:
            container = self.client.containers.create(
                image_id,
                command=list(command) or None,
                name=name,
                environment=env,
                volumes=list(app.volumes),
                labels=labels,
                # No restart while it is on trial: a crash in the health gate stays a crash, with its
                # exit code. keep_running() gives it the restart policy once it passed.
                restart_policy={"Name": "no"},
                init=True,
                network=self.network,
                detach=True,
                **limits(app),
            )
        except docker.errors.APIError as err:
            raise PermanentError(f"cannot create container {name}: {err.explanation or err}") from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err
        try:
            self._join_networks(container, app, name)
        except ZddError:
            self.remove(container.id)
            raise
        return container

    def start(self, app: AppConfig, image_id: str, ref: ImageRef, deploy_id: str, replica: int = 1) -> Container:
        name = container_name(app.name, deploy_id, replica)
        container = self._create(app, image_id, name, self._labels(app, ref, deploy_id), app.command)
        try:
            container.start()
            container.reload()
            ip = container.attrs["NetworkSettings"]["Networks"][self.network]["IPAddress"]
        except (docker.errors.APIError, KeyError) as err:
            self.remove(container.id)
            raise PermanentError(f"cannot start container {name}: {getattr(err, 'explanation', None) or err}") from err
        return Container(id=container.id, name=name, address=f"{ip}:{app.port}")

    def run_release(self, app: AppConfig, image_id: str, ref: ImageRef, deploy_id: str) -> tuple[str, str, bool]:
        """Start the deploy's release command in a one-off container of the new image, or find the one
        an agent that died started for this deploy (it ran or runs: never a second time). Returns its
        id, its name, and whether it was found rather than started."""
        name = f"zdd-{app.name}-{deploy_id}-release"
        earlier = self._release_of(app, deploy_id)
        if earlier is None:
            labels = {**self._labels(app, ref, deploy_id), LABEL_RELEASE: deploy_id}
            try:
                container = self._create(app, image_id, name, labels, app.release_command)
            except PermanentError:
                # A create that an abandoned call (dockerd slow to answer) made after all: that one it is.
                earlier = self._release_of(app, deploy_id)
                if earlier is None:
                    raise
            else:
                self._start_release(container)
                return container.id, name, False
        if earlier.attrs.get("Image") != image_id:
            # The tag now names another image (pushed again, pull = "always"): that image's release never ran.
            raise PermanentError(
                f"the release command of deploy {deploy_id} ran in {earlier.name} for image "
                f"{earlier.attrs.get('Image', '?')[:19]}, but {ref} is now {image_id[:19]}; deploy it again"
            )
        if earlier.status == "created":  # the agent died between create and start
            self._start_release(earlier)
        return earlier.id, earlier.name, True

    def _release_of(self, app: AppConfig, deploy_id: str) -> "docker.models.containers.Container | None":
        filters = {"label": [f"{LABEL_RELEASE}={deploy_id}", f"{LABEL_APP}={app.name}"]}
        try:
            found = self.client.containers.list(all=True, filters=filters, ignore_removed=True)
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        return found[0] if found else None

    def _start_release(self, container: "docker.models.containers.Container") -> None:
        try:
            container.start()
        except docker.errors.APIError as err:
            self.remove(container.id)
            raise PermanentError(
                f"cannot start the release command in {container.name}: {err.explanation or err}"
            ) from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err

    def exit_code(self, container_id: str) -> int | None:
        """None while it runs; its exit code once it ended (-1 if Docker lost it)."""
        try:
            state = self.client.containers.get(container_id).attrs["State"]
        except docker.errors.NotFound:
            return -1
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        if state.get("Running") or state.get("Status") == "created":
            return None
        return int(state.get("ExitCode", -1))

    def release_containers(self, app: AppConfig) -> list[tuple[str, str, str]]:
        """This agent's release containers of `app`: (id, name, deploy id)."""
        filters = {"label": [f"{LABEL_APP}={app.name}", f"{LABEL_INSTANCE}={self.instance}", LABEL_RELEASE]}
        try:
            found = self.client.containers.list(all=True, filters=filters, ignore_removed=True)
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        return [(c.id, c.name, c.labels.get(LABEL_RELEASE, "")) for c in found]

    def _join_networks(self, container: "docker.models.containers.Container", app: AppConfig, name: str) -> None:
        """Before it starts, so that the app finds its database by name from its first line of code."""
        for network in app.networks:
            try:
                self.client.networks.get(network).connect(container)
            except docker.errors.NotFound:
                raise PermanentError(
                    f"cannot start container {name}: Docker network {network!r} (apps.{app.name}.networks) does not "
                    f"exist; create it (docker network create {network}) and attach the app's database to it"
                ) from None
            except docker.errors.APIError as err:
                raise PermanentError(f"cannot join {name} to network {network}: {err.explanation or err}") from err
            except requests.exceptions.RequestException as err:
                raise _unavailable(err) from err

    def keep_running(self, container_id: str) -> None:
        """From now on dockerd restarts it when it dies, and after dockerd itself restarts."""
        try:
            self.client.api.update_container(container_id, restart_policy={"Name": "unless-stopped"})
        except docker.errors.APIError as err:
            explanation = err.explanation or err
            raise PermanentError(f"cannot set the restart policy of {container_id[:12]}: {explanation}") from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err

    def replacement(self, container_id: str) -> Container | None:
        return None  # one engine: a container stays where it was started

    def exit_reason(self, container_id: str) -> str | None:
        try:
            container = self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return "was removed"
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        state = container.attrs["State"]
        # Its restart policy brings a crashed container back within moments: a restart counts as a crash.
        restarts = container.attrs.get("RestartCount", 0)
        up = state.get("Running") and not state.get("Restarting")
        if up and not restarts:
            return None
        try:
            last_lines = container.logs(tail=3).decode(errors="replace").strip().replace("\n", " | ")
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err  # stopped by a dockerd that is going away, most likely
        if up:
            reason = f"crashed and was restarted by Docker ({restarts} time(s))"  # its exit code is gone by now
        else:
            reason = f"exited with code {state.get('ExitCode')}"
        if state.get("OOMKilled"):
            reason += " (out of memory)"
        return f"{reason}; last output: {last_lines}" if last_lines else reason

    def is_running(self, container_id: str) -> bool:
        try:
            return bool(self.client.containers.get(container_id).attrs["State"].get("Running"))
        except docker.errors.NotFound:
            return False
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err

    def stop(self, container_id: str, timeout: float) -> None:
        try:
            container = self.client.containers.get(container_id)
            # The HTTP call must outlive the stop timeout, or docker-py gives up before SIGKILL.
            self.client.api.timeout = API_TIMEOUT + timeout
            container.stop(timeout=max(0, round(timeout)))
        except docker.errors.NotFound:
            return
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        finally:
            self.client.api.timeout = API_TIMEOUT

    def stop_all(self, container_ids: Sequence[str], timeout: float) -> None:
        """Stop containers side by side (a version's replicas): N take as long as the slowest, not the sum."""
        with ThreadPoolExecutor(max_workers=max(1, len(container_ids)), thread_name_prefix="zdd-stop") as pool:
            for stopping in [pool.submit(self.stop, container_id, timeout) for container_id in container_ids]:
                stopping.result()

    def remove(self, container_id: str) -> None:
        try:
            self.client.containers.get(container_id).remove(force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as err:
            if err.status_code == 409 and "already in progress" in str(err.explanation):
                return  # someone (docker rm, a restart policy race) is removing it already: it goes
            raise _unavailable(err) from err
        except requests.exceptions.RequestException as err:
            raise _unavailable(err) from err

    def output(self, container_id: str, lines: int) -> str:
        """Its last `lines` lines of stdout and stderr, with Docker's timestamps."""
        try:
            raw = self.client.containers.get(container_id).logs(tail=lines, timestamps=True)
        except docker.errors.NotFound:
            return ""
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        return raw.decode(errors="replace")

    def stream_output(
        self, container_id: str, follow: bool, since: int | None, tail: int | str, timestamps: bool
    ) -> Iterator[bytes]:
        """Its stdout and stderr as Docker keeps them (`docker logs`); with `follow`, until it stops."""
        try:
            container = self.client.containers.get(container_id)
            # docker-py lifts the socket timeout of a log stream itself: a silent app is no error.
            yield from container.logs(stream=True, follow=follow, since=since, tail=tail, timestamps=timestamps)
        except docker.errors.NotFound:
            return
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err

    def containers(self, app: AppConfig, instance: str | None = None) -> list[Found]:
        """Every container zdd started for `app`, running or not, found by its labels: this agent's
        (`instance`, by default its own), or any agent's with instance="" (adopting after lost state)."""
        labels = [f"{LABEL_APP}={app.name}"]
        owner = self.instance if instance is None else instance
        if owner:
            labels.append(f"{LABEL_INSTANCE}={owner}")
        try:
            found = self.client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
        except (docker.errors.APIError, requests.exceptions.RequestException) as err:
            raise _unavailable(err) from err
        # Release containers never serve: the swap and the converger handle them apart.
        return [_found(c, app, self.network) for c in found if LABEL_RELEASE not in c.labels]


def container_name(app: str, deploy_id: str, replica: int) -> str:
    """`zdd-web-<deploy>`, and `zdd-web-<deploy>-2` ... for the further replicas of the same deploy."""
    return f"zdd-{app}-{deploy_id}" + (f"-{replica}" if replica > 1 else "")


def limits(app: AppConfig) -> dict[str, int]:
    """docker run's --memory, --cpus and --pids-limit as docker-py's create() takes them."""
    found = {}
    if app.memory is not None:
        found["mem_limit"] = app.memory
    if app.cpus is not None:
        found["nano_cpus"] = round(app.cpus * 1e9)
    if app.pids_limit is not None:
        found["pids_limit"] = app.pids_limit
    return found


def _found(container: "docker.models.containers.Container", app: AppConfig, default_network: str) -> Found:
    labels = container.labels
    # Containers of an older zdd have no port or network label: they were started with the config's.
    port = labels.get(LABEL_PORT) or str(app.port)
    network = labels.get(LABEL_NETWORK) or default_network
    ip = (container.attrs.get("NetworkSettings", {}).get("Networks", {}).get(network) or {}).get("IPAddress", "")
    state = container.attrs.get("State", {})
    return Found(
        id=container.id,
        name=container.name,
        running=bool(state.get("Running", False)),
        address=f"{ip}:{port}" if ip else "",
        tag=labels.get(LABEL_TAG, ""),
        reference=labels.get(LABEL_REFERENCE, ""),
        image_id=container.attrs.get("Image", ""),
        deploy=labels.get(LABEL_DEPLOY, ""),
        since=rfc3339_epoch(state.get("StartedAt", "")),
        instance=labels.get(LABEL_INSTANCE, ""),
    )


def _pull_error(ref: ImageRef, message: str) -> Exception:
    lowered = message.lower()
    if "not found" in lowered or "unknown" in lowered or "denied" in lowered or "unauthorized" in lowered:
        return PermanentError(f"pull {ref}: {message}")
    return TemporaryError(f"pull {ref}: {message}")
