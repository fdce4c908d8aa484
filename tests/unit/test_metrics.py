"""The metrics textfile, read back with Prometheus' own text parser."""

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from zdd.metrics import PhaseTimes, render, write_textfile
from zdd.state import HistoryEntry, Running, State

LIVE = Running(
    tag="v42",
    reference="registry.example.com/acme/web:v42",
    image_id="sha256:1",
    container_id="c1",
    container_name="zdd-web-1",
    address="10.0.0.2:8080",
    since=0.0,
)


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_textfile_parses_and_says_what_happened(tmp_path):
    state = State()
    state.app("web").current = LIVE
    state.history = [
        HistoryEntry("d1", "web", "v41", "r", 0.0, started_at=100.0, ended_at=112.5, result="succeeded"),
        HistoryEntry("d2", "web", "v42", "r", 0.0, started_at=200.0, ended_at=207.0, result="failed"),
    ]
    phases = PhaseTimes()
    for phase, at in (("pulling", 200.0), ("starting", 203.0), ("started", 203.5), ("switching", 206.0)):
        phases.enter("web", phase, at)
    phases.ended("web", 207.0)
    deploys = Counter({("web", "succeeded"): 1, ("web", "failed"): 1})
    path = tmp_path / "zdd.prom"
    write_textfile(path, render(state, ["web", "api"], deploys, phases, up=True))

    found = samples(path.read_text())
    assert found[("zdd_up", ())] == 1
    assert found[("zdd_deploys_total", (("app", "web"), ("result", "failed")))] == 1
    assert found[("zdd_deploys_total", (("app", "api"), ("result", "succeeded")))] == 0
    assert found[("zdd_last_deploy_phase_seconds", (("app", "web"), ("phase", "pulling")))] == 3.0
    assert found[("zdd_last_deploy_phase_seconds", (("app", "web"), ("phase", "started")))] == 2.5
    assert found[("zdd_last_deploy_seconds", (("app", "web"),))] == 7.0
    version = (("app", "web"), ("reference", LIVE.reference), ("version", "v42"))
    assert found[("zdd_live_version_info", version)] == 1
    assert found[("zdd_last_success_timestamp_seconds", (("app", "web"),))] == 112.5
    assert [p.name for p in tmp_path.iterdir()] == ["zdd.prom"]  # the temporary file was renamed


def test_a_stopped_agent_says_so():
    assert samples(render(State(), ["web"], Counter(), PhaseTimes(), up=False))[("zdd_up", ())] == 0
