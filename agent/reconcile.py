"""What a starting agent does about each app, decided from the phase journal and what really exists.

Pure: given the app's state, the containers Docker has with the app's label and the addresses zdd dns
answers (routes.toml), return a Plan. The converger carries it out. (docs/ARCHITECTURE.md, section 4.)
"""

from dataclasses import dataclass, field, replace
from enum import StrEnum

from .state import AppState, Running

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


@dataclass
class Plan:
    current: Running | None  # serves once the plan is carried out
    drain_and_stop: Running | None = None  # the old side of a deploy that had switched
    probation_until: float | None = None  # it had drained and was in probation until then (epoch seconds)
    remove: list[Found] = field(default_factory=list)  # never went live, or leaked
    interrupted: Interrupted = Interrupted.NONE
    notes: list[str] = field(default_factory=list)


def _running_from_phase(data: dict[str, str], since: float) -> Running:
    return Running(
        tag=data.get("tag", ""),
        reference=data.get("reference", ""),
        image_id=data.get("image", ""),
        container_id=data["container"],
        container_name=data.get("name", ""),
        address=data.get("address", ""),
        since=since,
    )


def _running_from_found(found: Found) -> Running:
    return Running(
        tag=found.tag,
        reference=found.reference,
        image_id=found.image_id,
        container_id=found.id,
        container_name=found.name,
        address=found.address,
        since=found.since,
    )


def plan_app(app: str, state: AppState, containers: list[Found], routed: set[str], now: float) -> Plan:
    by_id = {c.id: c for c in containers}
    notes = []
    current = state.current
    if current and current.container_id not in by_id:
        notes.append(f"{app}: the container of {current.tag} ({current.container_name}) is gone")
        current = None

    new_id = state.phase_data.get("container", "")
    new = by_id.get(new_id)
    old = current if current and current.container_id != new_id else None

    if state.phase == ROLLING_BACK:
        return _finish_rollback(app, current, old, new, containers, notes)

    switched = state.phase in AFTER_SWITCH or (state.phase == "switching" and new is not None and new.address in routed)
    if state.phase and new and new.running and switched:
        # Addresses as Docker reports them now: a dockerd restart may have moved either container.
        live = _following(app, _running_from_phase(state.phase_data, now), new, notes)
        if old:
            old = _following(app, old, by_id[old.container_id], notes)
        if state.phase == "stopping":
            old = None  # drained and sent SIGTERM before the crash: removing it is all that is left
        keep = {new_id, old.container_id if old else ""}
        notes.append(f"{app}: finishing the interrupted deploy of {live.tag} (it had switched)")
        until = state.phase_data.get("until", "") if state.phase == "probation" else ""
        return Plan(
            current=live,
            drain_and_stop=old,
            probation_until=float(until) if until else None,
            remove=[c for c in containers if c.id not in keep],
            interrupted=Interrupted.AFTER_SWITCH,
            notes=notes,
        )
    if state.phase in ("draining", "probation") and old:
        # The new version went live and then died while the old one still ran: the old one serves again,
        # and a version that died in service is not retried.
        notes.append(f"{app}: the new container died after the switch ({state.phase}); {old.tag} serves again")
        return Plan(
            current=old,
            remove=[c for c in containers if c.id != old.container_id],
            interrupted=Interrupted.ROLLED_BACK,
            notes=notes,
        )

    if current is None and not state.phase:
        adopted = _adopt(app, containers, routed, notes)
        if adopted:
            current = adopted
    keep = current.container_id if current else ""
    if current:
        current = _following(app, current, by_id[keep], notes)
    remove = [c for c in containers if c.id != keep]
    interrupted = Interrupted.BEFORE_SWITCH if state.phase else Interrupted.NONE
    if interrupted:
        notes.append(f"{app}: an interrupted deploy ({state.phase}) never went live; removing what it started")
    return Plan(current=current, remove=remove, interrupted=interrupted, notes=notes)


def _finish_rollback(
    app: str, current: Running | None, old: Running | None, new: Found | None, containers: list[Found], notes: list[str]
) -> Plan:
    """The probation failed and zdd was routing back when it was cut short. Back to the old container if
    it still runs; if it does not, the new one stays (Docker's restart policy is all that is left to it)."""
    old_found = next((c for c in containers if old and c.id == old.container_id and c.running), None)
    if old and old_found:
        notes.append(f"{app}: finishing the roll-back to {old.tag} (the new version failed its probation)")
        back = _following(app, old, old_found, notes)
        return Plan(
            current=back,
            remove=[c for c in containers if c.id != old.container_id],
            interrupted=Interrupted.ROLLED_BACK,
            notes=notes,
        )
    if new and new.running:
        notes.append(f"{app}: the roll-back has nothing to go back to (the old container is gone); {new.name} stays")
        stays = _running_from_found(new)
        return Plan(
            current=stays,
            remove=[c for c in containers if c.id != new.id],
            interrupted=Interrupted.ROLLED_BACK,
            notes=notes,
        )
    notes.append(f"{app}: neither side of the roll-back runs any more")
    return Plan(current=None, remove=list(containers), interrupted=Interrupted.ROLLED_BACK, notes=notes)


def _adopt(app: str, containers: list[Found], routed: set[str], notes: list[str]) -> Running | None:
    """No recorded version (state lost, or a new state dir on the same host) but containers of this
    agent's instance run: the one zdd dns routes to serves on; never turn a serving site into a 503.
    With no route known, the most recently started running container is the live one."""
    running = [c for c in containers if c.running and c.address]
    if not running:
        return None
    chosen = next((c for c in running if c.address in routed), None)
    if chosen is None:
        chosen = max(running, key=lambda c: (c.since, c.deploy))
    notes.append(f"{app}: no version recorded; adopting the running {chosen.tag or chosen.name} ({chosen.name})")
    return _running_from_found(chosen)


def _following(app: str, running: Running, found: Found, notes: list[str]) -> Running:
    """dockerd restarted the container (restart policy, or its own restart) on another IP: Caddy must
    follow it."""
    if not found.address or found.address == running.address:
        return running
    notes.append(f"{app}: {running.tag} moved from {running.address} to {found.address}")
    return replace(running, address=found.address)
