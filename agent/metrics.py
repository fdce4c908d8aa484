"""Metrics in Prometheus' text format, for node_exporter's textfile collector (no port of zdd's own):
rewritten atomically whenever a deploy ends, when the agent starts, and when it stops.

`time() - zdd_last_success_timestamp_seconds` is the time since an app's last successful deploy
(a textfile holds what was true when written; node_textfile_mtime_seconds says when that was).
"""

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .state import HistoryEntry, State

RESULTS = ("succeeded", "failed", "unchanged", "superseded")


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{key}="{escape(value)}"' for key, value in labels.items()) + "}"


class PhaseTimes:
    """When each phase of an app's deploy began, so that the last deploy's time per phase is known."""

    def __init__(self) -> None:
        self._running: dict[str, list[tuple[str, float]]] = {}
        self.last: dict[str, dict[str, float]] = {}

    def enter(self, app: str, phase: str, now: float) -> None:
        if phase:
            self._running.setdefault(app, []).append((phase, now))

    def ended(self, app: str, now: float) -> None:
        entered = self._running.pop(app, [])
        if not entered:
            return  # it ended before its first phase (unchanged, superseded): the last timing stays
        durations: dict[str, float] = {}
        for (phase, began), (_, until) in zip(entered, [*entered[1:], ("", now)], strict=True):
            durations[phase] = durations.get(phase, 0.0) + max(0.0, until - began)
        self.last[app] = durations


def render(state: State, apps: Iterable[str], deploys: Counter, phases: PhaseTimes, up: bool) -> str:
    apps = list(apps)
    lines = [
        "# HELP zdd_up 1 while the zdd agent runs (0 once it stopped cleanly).",
        "# TYPE zdd_up gauge",
        f"zdd_up {1 if up else 0}",
        "# HELP zdd_deploys_total Deploys that ended since the agent started, by app and result.",
        "# TYPE zdd_deploys_total counter",
    ]
    for app in apps:
        for result in RESULTS:
            lines.append(f"zdd_deploys_total{_labels(app=app, result=result)} {deploys[(app, result)]}")
    lines += [
        "# HELP zdd_last_deploy_phase_seconds Time each phase of the app's last deploy took.",
        "# TYPE zdd_last_deploy_phase_seconds gauge",
    ]
    for app in apps:
        for phase, seconds in phases.last.get(app, {}).items():
            lines.append(f"zdd_last_deploy_phase_seconds{_labels(app=app, phase=phase)} {seconds:.3f}")
    lines += [
        "# HELP zdd_last_deploy_seconds Time the app's last deploy took, from its start to its end.",
        "# TYPE zdd_last_deploy_seconds gauge",
    ]
    for app in apps:
        last = _last(state.history, app, ("succeeded", "failed"))
        if last and last.started_at:
            lines.append(f"zdd_last_deploy_seconds{_labels(app=app)} {last.ended_at - last.started_at:.3f}")
    lines += [
        "# HELP zdd_live_version_info The version each app serves.",
        "# TYPE zdd_live_version_info gauge",
    ]
    for app in apps:
        current = state.app(app).current if app in state.apps else None
        if current:
            lines.append(f"zdd_live_version_info{_labels(app=app, version=current.tag, reference=current.reference)} 1")
    lines += [
        "# HELP zdd_last_success_timestamp_seconds When the app's last successful deploy ended (Unix time).",
        "# TYPE zdd_last_success_timestamp_seconds gauge",
    ]
    for app in apps:
        last = _last(state.history, app, ("succeeded",))
        if last:
            lines.append(f"zdd_last_success_timestamp_seconds{_labels(app=app)} {last.ended_at:.3f}")
    return "\n".join(lines) + "\n"


def _last(history: list[HistoryEntry], app: str, results: tuple[str, ...]) -> HistoryEntry | None:
    return next((e for e in reversed(history) if e.app == app and e.result in results), None)


def write_textfile(path: Path, text: str) -> None:
    """Atomically: node_exporter must never read half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.chmod(0o644)
    os.replace(temporary, path)
