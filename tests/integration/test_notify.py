"""Being told, by the real agent: every deploy result reaches the hook command, the webhook (a real HTTP
server on loopback) and the metrics textfile (read with Prometheus' own parser); a slow receiver never
holds up the queue."""

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_deploy import wait_until
from tests.support.webhook import WebhookReceiver

ONLY_DEBIAN_CADDY = pytest.mark.parametrize("caddy_binary", ["caddy2.6"], indirect=True)


def metrics(path) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }


@ONLY_DEBIAN_CADDY
def test_each_result_reaches_the_hook_the_webhook_and_the_metrics_and_a_slow_receiver_holds_nothing(stack, tmp_path):
    told = tmp_path / "told"
    hook = f'echo "$ZDD_APP $ZDD_FROM>$ZDD_TO $ZDD_RESULT $ZDD_DEPLOY_ID" >> {told}'
    prom = tmp_path / "zdd.prom"
    with WebhookReceiver(answers=[500], delay=2.0) as receiver:  # slow, and it fails once: retried after 1 s
        stack.configure(
            top={"notify": {"command": hook, "webhook": receiver.url}, "metrics_textfile": str(prom)},
            start_timeout="3s",
        )
        stack.start()
        assert metrics(prom)[("zdd_up", ())] == 1
        assert stack.deploy("v1").returncode == 0
        assert stack.deploy("sick").returncode == 1  # queued and run while v1's notification is still on its way
        assert len(receiver.bodies) < 3, "the deploys waited for the webhook"
        wait_until(lambda: len(receiver.bodies) == 3, 30, "both results delivered, the first one twice")

    lines = told.read_text().splitlines()
    assert [line.rsplit(" ", 1)[0] for line in lines] == ["web >v1 succeeded", "web v1>sick failed"]
    assert [body["result"] for body in receiver.bodies] == ["succeeded", "succeeded", "failed"]
    failed = receiver.bodies[-1]
    assert (failed["app"], failed["from"], failed["to"]) == ("web", "v1", "sick")
    assert "did not pass" in failed["reason"] and failed["deploy_id"] == lines[1].rsplit(" ", 1)[1]

    found = metrics(prom)
    assert found[("zdd_deploys_total", (("app", "web"), ("result", "succeeded")))] == 1
    assert found[("zdd_deploys_total", (("app", "web"), ("result", "failed")))] == 1
    assert found[("zdd_live_version_info", (("app", "web"), ("reference", "zdd-it/web:v1"), ("version", "v1")))] == 1
    phases = {dict(labels)["phase"] for name, labels in found if name == "zdd_last_deploy_phase_seconds"}
    assert phases >= {"pulling", "starting", "started"}  # the failed deploy's, which never switched
    assert found[("zdd_last_success_timestamp_seconds", (("app", "web"),))] <= time.time()
    stack.agent.stop()
    assert metrics(prom)[("zdd_up", ())] == 0
