"""What a starting agent does about each app, decided from the phase journal and what really exists.

Pure: given the app's state, the containers Docker has with the app's label and the addresses Caddy
routes to, return a Plan. The daemon carries it out. (docs/ARCHITECTURE.md, section 4.)
"""

from dataclasses import dataclass, field, replace

from .state import AppState, Running

AFTER_SWITCH = ("draining", "probation", "stopping")


@dataclass(frozen=True)
class Found:
    """A container Docker reports with label zdd.app=<app>."""

    id: str
    name: str
    running: bool
    address: str  # ip:port on zdd's network ("" when it has none)


@dataclass
class Plan:
    current: Running | None  # serves once the plan is carried out
    drain_and_stop: Running | None = None  # the old side of a deploy that had switched
    probation_until: float | None = None  # it had drained and was in probation until then (epoch seconds)
    remove: list[Found] = field(default_factory=list)  # never went live, or leaked
    # "", "before-switch" (the deploy is retried), "after-switch" (it is finished) or "rolled-back" (the
    # new container died in probation: the old one serves again and the deploy failed)
    interrupted: str = ""
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


def plan_app(app: str, state: AppState, containers: list[Found], routed: set[str], now: float) -> Plan:
    by_id = {c.id: c for c in containers}
    notes = []
    current = state.current
    if current and current.container_id not in by_id:
        notes.append(f"{app}: the container of {current.tag} ({current.container_name}) is gone")
        current = None

    new_id = state.phase_data.get("container", "")
    new = by_id.get(new_id)
    switched = state.phase in AFTER_SWITCH or (state.phase == "switching" and new is not None and new.address in routed)
    if state.phase and new and new.running and switched:
        # Addresses as Docker reports them now: a dockerd restart may have moved either container.
        live = _following(app, _running_from_phase(state.phase_data, now), new, notes)
        old = current if current and current.container_id != new_id else None
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
            interrupted="after-switch",
            notes=notes,
        )
    if state.phase in ("draining", "probation") and current and current.container_id != new_id:
        # The new version went live and then died while the old one still ran: the old one serves again,
        # and a version that died in service is not retried.
        notes.append(f"{app}: the new container died after the switch ({state.phase}); {current.tag} serves again")
        keep = current.container_id
        remove = [c for c in containers if c.id != keep]
        return Plan(current=current, remove=remove, interrupted="rolled-back", notes=notes)

    keep = current.container_id if current else ""
    if current:
        current = _following(app, current, by_id[keep], notes)
    remove = [c for c in containers if c.id != keep]
    interrupted = "before-switch" if state.phase else ""
    if interrupted:
        notes.append(f"{app}: an interrupted deploy ({state.phase}) never went live; removing what it started")
    return Plan(current=current, remove=remove, interrupted=interrupted, notes=notes)


def _following(app: str, running: Running, found: Found, notes: list[str]) -> Running:
    """dockerd restarted the container (restart policy, or its own restart) on another IP: Caddy must
    follow it."""
    if not found.address or found.address == running.address:
        return running
    notes.append(f"{app}: {running.tag} moved from {running.address} to {found.address}")
    return replace(running, address=found.address)
