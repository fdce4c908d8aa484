"""In-memory stand-ins for the swap's protocols, recording every call in one shared event log.

Used only by the fast unit tier; the integration tier runs the same swap against real Docker and Caddy.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from zdd.config import AppConfig, HealthCheck
from zdd.errors import PermanentError
from zdd.reconcile import Found
from zdd.reference import ImageRef
from zdd.swap import Container


@dataclass
class FakeClock:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)
    on_sleep: Callable[[float], None] | None = None

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(self.now)


@dataclass
class FakeRuntime:
    log: list[str]
    local_images: set[str] = field(default_factory=set)
    registry: dict[str, str] = field(default_factory=dict)  # reference -> image id
    # The new container dies after this many exit checks (the gate checks after a failed probe only;
    # the probation at each of its checks).
    exits_after_probes: int | None = None
    dead: set[str] = field(default_factory=set)  # containers is_running() says are not running
    pull_error: Exception | None = None
    free: int | None = 10**12
    started: list[Container] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    found: list[Found] = field(default_factory=list)  # what containers() reports (the converger's view)
    release_exits: list[int | None] = field(default_factory=list)  # exit_code() answers in order, then 0
    releases: dict[str, str] = field(default_factory=dict)  # deploy id -> its release container, while it exists
    stop_exits: dict[str, int] = field(default_factory=dict)  # container id -> its exit code once stopped
    exit_checks: int = 0
    crashed: dict[str, str] = field(default_factory=dict)  # container id -> what exit_reason() says of it
    moved: dict[str, Container] = field(default_factory=dict)  # container id -> what replacement() answers

    def has_image(self, ref: ImageRef) -> bool:
        return str(ref) in self.local_images

    def free_bytes(self) -> int | None:
        return self.free

    def pull(self, ref: ImageRef, progress: Callable[[int, int], None], stall_timeout: float = 0.0) -> None:
        self.log.append(f"pull {ref}")
        progress(0, 0)  # the manifest: no layer size known yet
        progress(1_500_000, 3_000_000)
        progress(3_000_000, 3_000_000)
        if self.pull_error:
            raise self.pull_error
        if str(ref) not in self.registry:
            raise PermanentError(f"pull {ref}: manifest unknown")
        self.local_images.add(str(ref))

    def image_id(self, ref: ImageRef) -> str:
        return self.registry.get(str(ref), f"sha256:{str(ref).encode().hex()[:12]}")

    def start(self, app: AppConfig, image_id: str, ref: ImageRef, deploy_id: str, replica: int = 1) -> Container:
        n = len(self.started) + 2
        name = f"zdd-{app.name}-{deploy_id}" + (f"-{replica}" if replica > 1 else "")
        container = Container(id=f"c{n}", name=name, address=f"10.0.0.{n}:{app.port}")
        self.started.append(container)
        self.log.append(f"start {ref.version} as {container.id}")
        return container

    def keep_running(self, container_id: str) -> None:
        self.log.append(f"keep {container_id} running")

    def replacement(self, container_id: str) -> Container | None:
        return self.moved.get(container_id)

    def exit_reason(self, container_id: str) -> str | None:
        self.exit_checks += 1
        if container_id in self.crashed:
            return self.crashed[container_id]
        if self.exits_after_probes is not None and self.exit_checks > self.exits_after_probes:
            return "exited with code 1"
        return None

    def is_running(self, container_id: str) -> bool:
        return container_id not in self.dead

    def stop(self, container_id: str, timeout: float) -> None:
        self.log.append(f"stop {container_id} timeout={timeout:g}")

    def run_release(self, app: AppConfig, image_id: str, ref: ImageRef, deploy_id: str) -> tuple[str, str, bool]:
        found = deploy_id in self.releases
        self.releases.setdefault(deploy_id, f"r-{deploy_id}")
        self.log.append(f"release {ref.version}: {'found' if found else 'run'} r-{deploy_id}")
        return self.releases[deploy_id], f"zdd-{app.name}-{deploy_id}-release", found

    def exit_code(self, container_id: str) -> int | None:
        if not container_id.startswith("r-"):  # an app container after its stop
            return self.stop_exits.get(container_id, 0)
        return self.release_exits.pop(0) if self.release_exits else 0

    def release_containers(self, app: AppConfig) -> list[tuple[str, str, str]]:
        return [(cid, f"zdd-{app.name}-{deploy}-release", deploy) for deploy, cid in self.releases.items()]

    def output(self, container_id: str, lines: int) -> str:
        return f"output of {container_id}\n"

    def stop_all(self, container_ids: Sequence[str], timeout: float) -> None:
        for container_id in container_ids:
            self.stop(container_id, timeout)

    def remove(self, container_id: str) -> None:
        self.releases = {deploy: cid for deploy, cid in self.releases.items() if cid != container_id}
        self.removed.append(container_id)
        self.found = [f for f in self.found if f.id != container_id]
        self.log.append(f"remove {container_id}")

    def containers(self, app: AppConfig, instance: str | None = None) -> list[Found]:
        return list(self.found)

    def ensure_network(self) -> None:
        pass


@dataclass
class FakeRouter:
    log: list[str]
    in_flight_by_address: dict[str, list[int]] = field(default_factory=dict)  # readings, consumed in order
    fail_route: Exception | None = None
    routes: list[list[list[str]]] = field(default_factory=list)  # each route's sets, newest version first
    switch_delay: float = 0.0

    def route(self, app: AppConfig, sets: Sequence[Sequence[str]]) -> None:
        described = " ".join(s[0] if len(s) == 1 else f"[{' '.join(s)}]" for s in sets if s)
        self.log.append(f"route {described or '(none)'}")
        if self.fail_route:
            error, self.fail_route = self.fail_route, None  # fail once
            raise error
        self.routes.append([list(addresses) for addresses in sets if addresses])

    def routed(self, app: str) -> list[list[str]]:
        return list(self.routes[-1]) if self.routes else []

    def ensure_route(self, app: AppConfig, sets: Sequence[Sequence[str]]) -> None:
        if self.routed(app.name) != [list(addresses) for addresses in sets if addresses]:
            self.route(app, sets)

    def in_flight(self, addresses: Sequence[str]) -> int | None:
        counts = [self._in_flight(address) for address in addresses]
        return None if all(count is None for count in counts) else sum(count or 0 for count in counts)

    def _in_flight(self, address: str) -> int | None:
        readings = self.in_flight_by_address.get(address)
        if not readings:
            return 0 if self.routes and any(address in addresses for addresses in self.routes[-1]) else None
        return readings.pop(0) if len(readings) > 1 else readings[0]


@dataclass
class FakeProber:
    log: list[str]
    results: list[str | None] = field(default_factory=list)  # consumed in order; then always healthy
    clock: FakeClock | None = None  # with `took`: each probe advances it, as a real one takes time
    took: float = 0.0
    failing: dict[str, str] = field(default_factory=dict)  # address -> the failure every probe of it gets

    def check(self, address: str, health: HealthCheck) -> str | None:
        if self.clock:
            self.clock.now += self.took
        result = self.failing.get(address) or (self.results.pop(0) if self.results else None)
        self.log.append(f"probe {address}{health.path} -> {result or 'ok'}")
        return result


@dataclass
class FakeJournal:
    log: list[str]
    phases: list[str] = field(default_factory=list)
    kept_output: str = ""  # what the swap kept of a removed new container's output

    def enter(self, app: str, phase: str, **data: str) -> None:
        self.phases.append(phase)
        self.log.append(f"phase {phase or '(done)'}")

    def keep_output(self, app: str, text: str) -> None:
        self.kept_output = text


def collapse(events: Sequence[str]) -> list[str]:
    """Merge runs of identical probe lines so expected orders stay readable."""
    out: list[str] = []
    for event in events:
        if out and event == out[-1] and event.startswith("probe"):
            continue
        out.append(event)
    return out
