"""What a starting agent does about each app, decided from the phase journal and what really exists.

Pure: given the app's state, the containers Docker has with the app's label and the addresses zdd dns
answers (routes.toml), return a Plan. The converger carries it out. (docs/ARCHITECTURE.md, section 4.)
"""

from dataclasses import dataclass, field, replace
from enum import StrEnum

from .state import AppState, Replica, Running, decode_replicas

AFTER_SWITCH = ("draining", "probation", "stopping")
ROLLING_BACK = "rolling-back"  # the new version failed its probation; the route goes back to the old one
# Phases a deploy cut short by an outage leaves to the converger (finish, or finish going back).
LEFT_TO_CONVERGE = (*AFTER_SWITCH, ROLLING_BACK)


class Interrupted(StrEnum):
    """How a deploy that a crash (or an outage) cut short ends."""

    NONE = ""
    BEFORE_SWITCH = "before-switch"  # never went live: undone, and retried once
    AFTER_SWITCH = "after-switch"  # live: finished (the rest of its drain, probation and stop)
    ROLLED_BACK = "rolled-back"  # died in service, or failed its probation: the old version serves again


@dataclass(frozen=True)
class Found:
    """A container Docker reports with label zdd.app=<app>."""

    id: str
    name: str
    running: bool
    address: str  # ip:port on the network it was started on ("" when it has none)
    tag: str = ""  # the version it runs (label zdd.tag)
    reference: str = ""
    image_id: str = ""
    deploy: str = ""  # the deploy that started it (label zdd.deploy): orders containers by age
    since: float = 0.0  # when it started (epoch seconds)
    instance: str = ""  # the agent that started it (label zdd.instance)
    # What removing it removes with it: a Swarm task's colour (its service, scaled to 0 as a whole);
    # "" for a container, removed alone.
    group: str = ""


@dataclass
class Plan:
    current: Running | None  # serves once the plan is carried out
    drain_and_stop: Running | None = None  # the old side of a deploy that had switched
    probation_until: float | None = None  # it had drained and was in probation until then (epoch seconds)
    remove: list[Found] = field(default_factory=list)  # never went live, or leaked
    interrupted: Interrupted = Interrupted.NONE
    notes: list[str] = field(default_factory=list)
    # Containers Docker has but that do not run (Docker may restart them): a version with replicas is
    # routed to the others meanwhile (routable()).
    down: set[str] = field(default_factory=set)

    def routable(self, running: Running | None) -> Running | None:
        """`running` on its containers that run, or all of them when none does (better than no route)."""
        up = [r for r in running.replicas if r.container_id not in self.down] if running else []
        return running.with_replicas(up) if running and up else running


def _running_from_phase(data: dict[str, str], since: float) -> Running:
    return Running(
        tag=data.get("tag", ""),
        reference=data.get("reference", ""),
        image_id=data.get("image", ""),
        container_id=data["container"],
        container_name=data.get("name", ""),
        address=data.get("address", ""),
        since=since,
        more=decode_replicas(data.get("more", "")),
    )


def running_slots(containers: list[Found]) -> dict[str, Found]:
    """The Swarm slots whose task runs, by slot name (`zdd-web-blue.2`); none for local containers."""
    return {c.name: c for c in containers if c.group and c.running}


def same_slots(running: Running | None, containers: list[Found]) -> Running | None:
    """`running` on the tasks its Swarm slots run now: Swarm runs a task again (its node failed, or its app
    exited) as a new task, with a new id, in the same slot, which has the same name (`zdd-web-blue.2`).
    A slot whose new task does not run yet keeps the recorded one; a container of the local engine (no
    group) keeps its id."""
    slots = running_slots(containers)
    if running is None or not slots:
        return running
    ids = {c.id for c in containers}
    return running.with_replicas(
        [
            replace(r, container_id=slots[r.container_name].id)
            if r.container_id not in ids and r.container_name in slots
            else r
            for r in running.replicas
        ]
    )


def slot_restarts(running: Running | None, containers: list[Found]) -> dict[str, Found]:
    """The replicas of `running` whose Swarm slot now runs another task, by the recorded task's id: what
    the converger gates before it routes them (Swap.follow)."""
    slots = running_slots(containers)
    replicas = running.replicas if running else []
    return {
        r.container_id: slots[r.container_name]
        for r in replicas
        if r.container_name in slots and slots[r.container_name].id != r.container_id
    }


def waiting_for_slot(running: Running | None, by_id: dict[str, Found], slots: set[str]) -> set[str]:
    """The recorded replicas whose task is gone while their Swarm slot is still there (its new task does not
    run yet): kept, and not routed."""
    replicas = running.replicas if running else []
    return {r.container_id for r in replicas if r.container_id not in by_id and r.container_name in slots}


def _running_from_found(found: Found, containers: list[Found]) -> Running:
    """The version `found` runs, on it and on the other running containers its deploy started (replicas),
    in the order they were started (by name: zdd-web-d2, zdd-web-d2-2, ...)."""
    group = [found] + [
        c for c in containers if c.deploy and c.deploy == found.deploy and c.id != found.id and c.running and c.address
    ]
    first, *more = sorted(group, key=lambda c: (len(c.name), c.name))
    return Running(
        tag=first.tag,
        reference=first.reference,
        image_id=first.image_id,
        container_id=first.id,
        container_name=first.name,
        address=first.address,
        since=first.since,
        more=[Replica(c.id, c.name, c.address) for c in more],
    )


def _ids(running: Running | None) -> set[str]:
    return {r.container_id for r in running.replicas} if running else set()


def plan_app(app: str, state: AppState, containers: list[Found], routed: set[str], now: float) -> Plan:
    by_id = {c.id: c for c in containers}
    notes: list[str] = []
    # The recorded version on those of its containers that still exist, at the addresses Docker reports now.
    recorded = same_slots(state.current, containers)
    # A Swarm slot whose new task does not run yet: the recorded replica stays, unrouted, until it does.
    slots = {c.name for c in containers if c.group}
    current = _present(app, recorded, by_id, notes, slots) if recorded else None

    down = {c.id for c in containers if not c.running} | waiting_for_slot(recorded, by_id, slots)
    new_id = state.phase_data.get("container", "")
    journalled = same_slots(_running_from_phase(state.phase_data, now), containers) if new_id else None
    new_id = journalled.container_id if journalled else new_id
    restarting = waiting_for_slot(journalled, by_id, slots)
    down |= restarting
    # The new version is up when any of its containers runs (with replicas, the first may be restarting),
    # or, on a Swarm, when its slots are there (Swarm runs their tasks again: a moved task is not a death).
    replicas = journalled.replicas if journalled else []
    up = [by_id[r.container_id] for r in replicas if r.container_id in by_id and r.container_id not in down]
    new = up[0] if up else by_id.get(new_id)
    old = current if current and current.container_id != new_id else None

    if state.phase == ROLLING_BACK:
        return _finish_rollback(app, old, new, containers, notes, down)

    switched = state.phase in AFTER_SWITCH or (
        state.phase == "switching" and journalled is not None and bool(set(journalled.addresses) & routed)
    )
    if state.phase and (up or restarting) and switched:
        live = _present(app, journalled, by_id, notes, slots)
        keep = _ids(live) | _ids(old)
        notes.append(f"{app}: finishing the interrupted deploy of {live.tag} (it had switched)")
        until = state.phase_data.get("until", "") if state.phase == "probation" else ""
        # Stopping: drained before the crash, so its probation is over; the old containers that still run
        # are stopped (a stop of a stopped one is a no-op) and removed, not just killed.
        return Plan(
            current=live,
            drain_and_stop=old,
            probation_until=now if state.phase == "stopping" else float(until) if until else None,
            remove=[c for c in containers if c.id not in keep],
            interrupted=Interrupted.AFTER_SWITCH,
            notes=notes,
            down=down,
        )
    if state.phase in ("draining", "probation") and old:
        # The new version went live and then died while the old one still ran: the old one serves again,
        # and a version that died in service is not retried.
        notes.append(f"{app}: the new version stopped running after the switch ({state.phase}); {old.tag} serves again")
        return Plan(
            current=old,
            remove=[c for c in containers if c.id not in _ids(old)],
            interrupted=Interrupted.ROLLED_BACK,
            notes=notes,
            down=down,
        )

    if current is None and not state.phase:
        current = _adopt(app, containers, routed, notes)
    remove = [c for c in containers if c.id not in _ids(current)]
    interrupted = Interrupted.BEFORE_SWITCH if state.phase else Interrupted.NONE
    if interrupted:
        notes.append(f"{app}: an interrupted deploy ({state.phase}) never went live; removing what it started")
    return Plan(current=current, remove=remove, interrupted=interrupted, notes=notes, down=down)


def _finish_rollback(
    app: str, old: Running | None, new: Found | None, containers: list[Found], notes: list[str], down: set[str]
) -> Plan:
    """The probation failed and zdd was routing back when it was cut short. Back to the old containers if
    any still runs (a Swarm slot whose task runs again counts, unrouted meanwhile); if none does, the new
    one stays (Docker's restart policy is all that is left to it)."""
    running = {c.id for c in containers if c.running}
    ids = {c.id for c in containers}
    slots = {c.name for c in containers if c.group}
    back = [
        r
        for r in (old.replicas if old else [])
        if r.container_id in running or (r.container_id not in ids and r.container_name in slots)
    ]
    if back and not any(r.container_id in running for r in back):
        back = []  # none of it runs yet: going back would route nothing that answers
    if old and back:
        notes.append(f"{app}: finishing the roll-back to {old.tag} (the new version failed its probation)")
        return Plan(
            current=old.with_replicas(back),
            remove=[c for c in containers if c.id not in {r.container_id for r in back}],
            interrupted=Interrupted.ROLLED_BACK,
            notes=notes,
            down=down,
        )
    if new and new.running:
        stays = _running_from_found(new, containers)
        gone = f"no container of {old.tag} runs" if old else "the old version is gone"
        notes.append(f"{app}: the roll-back has nothing to go back to ({gone}); {stays.names} stays")
        return Plan(
            current=stays,
            remove=[c for c in containers if c.id not in _ids(stays)],
            interrupted=Interrupted.ROLLED_BACK,
            notes=notes,
        )
    notes.append(f"{app}: neither side of the roll-back runs any more")
    return Plan(current=None, remove=list(containers), interrupted=Interrupted.ROLLED_BACK, notes=notes)


def _adopt(app: str, containers: list[Found], routed: set[str], notes: list[str]) -> Running | None:
    """No recorded version (state lost, or a new state dir on the same host) but containers of this
    agent's instance run: the one zdd dns routes to serves on, with its deploy's other replicas; never
    turn a serving site into a 503. With no route known, the most recently started running container's."""
    running = [c for c in containers if c.running and c.address]
    if not running:
        return None
    chosen = next((c for c in running if c.address in routed), None)
    if chosen is None:
        chosen = max(running, key=lambda c: (c.since, c.deploy))
    adopted = _running_from_found(chosen, containers)
    notes.append(f"{app}: no version recorded; adopting the running {chosen.tag or chosen.name} ({adopted.names})")
    return adopted


def _present(
    app: str, running: Running, by_id: dict[str, Found], notes: list[str], slots: set[str] = frozenset()
) -> Running | None:
    """`running` on those of its containers Docker still has; None when it has none of them. dockerd may
    have restarted a container (restart policy, or its own restart) on another IP: Caddy must follow it.
    A Swarm task whose slot is still there (`slots`) is kept: Swarm runs the slot again."""
    present = []
    for replica in running.replicas:
        found = by_id.get(replica.container_id)
        if found is None and replica.container_name in slots:
            present.append(replica)
        elif found is None:
            notes.append(f"{app}: the container of {running.tag} ({replica.container_name}) is gone")
        elif found.address and found.address != replica.address:
            notes.append(f"{app}: {running.tag} moved from {replica.address} to {found.address}")
            present.append(replace(replica, address=found.address))
        else:
            present.append(replica)
    return running.with_replicas(present) if present else None
