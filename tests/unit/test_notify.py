"""Notifications against real receivers on this machine: a hook script, a webhook server on loopback."""

import pytest

from tests.support.webhook import WebhookReceiver
from zdd.config import NotifyConfig
from zdd.notify import Event, Notifications, post_webhook, run_hook

EVENT = Event(app="web", result="failed", to="v42", deploy_id="d1", previous="v41", reason="HTTP 500", host="srv1")


@pytest.fixture
def receiver():
    with WebhookReceiver() as running:
        yield running


def test_the_hook_gets_the_result_in_its_environment(tmp_path):
    out = tmp_path / "env"
    hook = ("/bin/sh", "-c", f"env | grep ^ZDD_ | sort > {out}")
    assert run_hook(hook, EVENT, timeout=5) is None
    assert out.read_text().splitlines() == [
        "ZDD_APP=web",
        "ZDD_DEPLOY_ID=d1",
        "ZDD_FROM=v41",
        "ZDD_HOST=srv1",
        "ZDD_REASON=HTTP 500",
        "ZDD_RESULT=failed",
        "ZDD_TO=v42",
    ]


@pytest.mark.parametrize(
    ("hook", "failure"),
    [
        (("/bin/sh", "-c", "echo 'slack: no route' >&2; exit 4"), "exited with code 4: slack: no route"),
        (("/bin/sh", "-c", "sleep 5"), "did not finish within 0.5s (notify.command_timeout); killed"),
        (("/nonexistent/notify",), "cannot run it: No such file or directory"),
    ],
)
def test_a_failing_hook_says_why(hook, failure):
    assert run_hook(hook, EVENT, timeout=0.5) == failure


def test_the_webhook_is_retried_with_backoff_until_it_answers(receiver):
    receiver.answers = [500, 503]
    waits: list[float] = []
    assert post_webhook(receiver.url, EVENT.body(), timeout=2, attempts=4, sleep=waits.append) is None
    assert waits == [1.0, 2.0] and len(receiver.bodies) == 3
    assert receiver.bodies[-1] == {
        "app": "web",
        "from": "v41",
        "to": "v42",
        "result": "failed",
        "reason": "HTTP 500",
        "deploy_id": "d1",
        "host": "srv1",
        "text": "srv1: web: v41 -> v42: failed (HTTP 500)",
    }


def test_a_refusal_is_not_retried_and_an_absent_receiver_is_given_up(receiver):
    receiver.answers = [404]
    refused = post_webhook(receiver.url, EVENT.body(), timeout=2, attempts=4, sleep=lambda s: None)
    assert refused == "HTTP 404 after 1 attempt(s)"
    closed = receiver.url.rsplit(":", 1)[0] + ":1/"
    failure = post_webhook(closed, EVENT.body(), timeout=2, attempts=3, sleep=lambda s: None)
    assert failure.endswith("after 3 attempt(s)") and "refused" in failure.lower()


def test_deliveries_run_in_order_off_the_callers_thread_and_flush_waits_for_them(receiver, caplog):
    notifications = Notifications(NotifyConfig(command=("/bin/sh", "-c", "exit 1"), webhook=receiver.url), "srv1")
    for n in range(3):
        notifications.send(Event(app="web", result="succeeded", to=f"v{n}", host="srv1"))
    notifications.flush()
    assert [body["to"] for body in receiver.bodies] == ["v0", "v1", "v2"]
    assert "notify: web: (none) -> v0 succeeded: hook /bin/sh exited with code 1" in caplog.text
    assert "secret-token" not in caplog.text


def test_notify_failure_tells_the_webhook_that_the_agent_failed(receiver, tmp_path, monkeypatch):
    from zdd import cli

    monkeypatch.setattr(cli, "setup_logging", lambda verbose: None)
    config = tmp_path / "zdd.toml"
    # The agent failed on a mistake elsewhere in the file: the [notify] table is still read.
    config.write_text(f'state_dir = "{tmp_path}/state"\n[apps.web]\nport = "x"\n[notify]\nwebhook = "{receiver.url}"\n')
    assert cli.main(["--config", str(config), "notify-failure", "zdd.service"]) == 0
    (body,) = receiver.bodies
    assert (body["result"], body["reason"]) == ("agent-failed", "zdd.service failed; journalctl -u zdd.service")
    assert body["text"].endswith(": zdd: agent-failed: zdd.service failed; journalctl -u zdd.service")
    receiver.answers = [404]
    assert cli.main(["--config", str(config), "notify-failure", "zdd.service"]) == 1


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("https://hooks.example.com/T0/B1/secret", "https://hooks.example.com/..."),
        ("https://bot:s3cret@hooks.example.com/x", "https://hooks.example.com/..."),
        ("http://127.0.0.1:9000/x?token=abc", "http://127.0.0.1:9000/..."),
    ],
)
def test_the_log_names_the_webhooks_host_not_its_secret(url, logged):
    from zdd.notify import _without_secret

    assert _without_secret(url) == logged
