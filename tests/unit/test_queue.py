"""Claiming the queue file: nothing a writer finished is lost or read twice."""

import os
import stat
import threading
import time

import pytest

import zdd.queue as queue_module
from zdd.queue import CLAIM_PREFIX, QueueFile, QueueWatcher, RequestDrop


def lines(entries):
    return [e.line for e in entries]


@pytest.fixture
def queue(tmp_path):
    q = QueueFile(tmp_path / "queue")
    q.ensure_exists()
    return q


def test_queue_file_is_created_0660(queue):
    assert stat.S_IMODE(os.stat(queue.path).st_mode) == 0o660


def test_claim_takes_lines_and_leaves_an_empty_queue_with_same_mode(queue):
    queue.path.write_text("v1\nv2\n")
    assert lines(queue.claim()) == ["v1", "v2"]
    assert queue.path.read_text() == ""
    assert stat.S_IMODE(os.stat(queue.path).st_mode) == 0o660
    assert lines(queue.claim()) == []  # read once only


def test_line_without_newline_is_taken_once_the_writer_is_quiet(queue, monkeypatch):
    queue.path.write_text("v3")  # echo -n v3 > queue
    assert lines(queue.claim()) == []  # a writer may still be adding to it
    monkeypatch.setattr(queue_module, "LINE_QUIET", 0.0)
    assert lines(queue.claim()) == ["v3"]
    assert lines(queue.claim()) == []


def test_a_line_written_in_two_writes_is_one_line(queue):
    queue.path.write_text("web v4")
    assert lines(queue.claim()) == []
    with open(next(iter(queue.claims)), "a") as late:
        late.write("2\n")
    assert lines(queue.claim()) == ["web v42"]


def test_writer_holding_the_old_queue_open_is_not_lost(queue):
    # `echo v2 >> queue` opened the queue just before the claim and writes after it: the bytes land in
    # the claimed file, which zdd keeps reading. (Two `>` writers at once clobber each other by design
    # of the shell's `>`; the README says to use `>>` or `zdd deploy` for concurrent writers.)
    queue.path.write_text("v1\n")
    late_writer = open(queue.path, "a")
    assert lines(queue.claim()) == ["v1"]
    late_writer.write("v2\n")
    late_writer.close()
    assert lines(queue.claim()) == ["v2"]


def test_claims_left_by_a_crash_are_read_at_start(tmp_path):
    (tmp_path / f"{CLAIM_PREFIX}1-1").write_text("v7\n")
    q = QueueFile(tmp_path / "queue")
    assert lines(q.claim()) == ["v7"]


def test_quiet_claims_are_removed_after_the_grace(queue, monkeypatch):
    queue.path.write_text("v1\n")
    queue.claim()
    assert queue.has_open_claims
    monkeypatch.setattr(queue_module, "CLAIM_GRACE", 0.0)
    queue.claim()
    assert not queue.has_open_claims
    assert [p.name for p in queue.path.parent.iterdir()] == ["queue"]


def test_concurrent_appenders_lose_nothing(queue):
    # `zdd deploy` and `echo v >> queue` append: many writers racing the claimer, every line arrives once.
    def writer(n):
        for i in range(50):
            fd = os.open(queue.path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, f"w{n}-{i}\n".encode())
            os.close(fd)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    seen = []
    while any(t.is_alive() for t in threads):
        seen += lines(queue.claim())
    for t in threads:
        t.join()
    time.sleep(0.01)
    seen += lines(queue.claim())
    assert sorted(seen) == sorted(f"w{n}-{i}" for n in range(4) for i in range(50))


@pytest.mark.parametrize("size", [queue_module.MAX_LINE_BYTES + 1, 10 * 1024 * 1024])
def test_an_oversize_line_is_refused_and_the_lines_around_it_count(queue, caplog, size):
    queue.path.write_bytes(b"v1\n" + b"x" * size + b"\nv2\n")
    assert lines(queue.claim()) == ["v1", "v2"]
    assert caplog.text.count("refused unread") == 1
    assert "xxxx" not in caplog.text  # junk is not copied into the journal


def test_an_oversize_line_still_being_written_is_skipped_through_its_newline(queue, caplog, monkeypatch):
    queue.path.write_bytes(b"v1\n" + b"x" * 100_000)
    assert lines(queue.claim()) == ["v1"]
    with open(next(iter(queue.claims)), "ab") as writer:
        writer.write(b"x" * 100_000 + b"\nv2\n")
    assert lines(queue.claim()) == ["v2"]
    assert caplog.text.count("refused unread") == 1


def test_fallback_without_rename_exchange(fs, monkeypatch):
    # pyfakefs: a filesystem without RENAME_EXCHANGE (the claim renames, then re-creates the queue).
    monkeypatch.setattr(queue_module, "exchange", lambda a, b: False)
    fs.create_dir("/var/lib/zdd")
    q = QueueFile(queue_module.Path("/var/lib/zdd/queue"))
    q.ensure_exists()
    q.path.write_text("v1\n")
    assert lines(q.claim()) == ["v1"]
    assert q.path.exists() and q.path.read_text() == ""
    assert stat.S_IMODE(os.stat(q.path).st_mode) == 0o660


def test_watcher_wakes_on_a_finished_echo(tmp_path):
    wake = threading.Event()
    q = QueueFile(tmp_path / "queue")
    q.ensure_exists()
    watcher = QueueWatcher(q.path, wake.set)
    watcher.start()
    try:
        time.sleep(0.2)
        (tmp_path / "unrelated").write_text("x")
        assert not wake.wait(0.3)
        with open(q.path, "w") as f:  # echo v2 > queue
            f.write("v2\n")
        assert wake.wait(3)
    finally:
        watcher.stop()


def test_watcher_wakes_on_an_atomic_writer(tmp_path):
    wake = threading.Event()
    (tmp_path / "queue").write_text("")
    watcher = QueueWatcher(tmp_path / "queue", wake.set)
    watcher.start()
    try:
        time.sleep(0.2)
        (tmp_path / "tmp").write_text("v3\n")
        wake.clear()
        os.rename(tmp_path / "tmp", tmp_path / "queue")  # mv tmp queue
        assert wake.wait(3)
    finally:
        watcher.stop()


def test_restored_offsets_read_nothing_twice_after_a_restart(queue):
    queue.path.write_text("v1\n")
    assert lines(queue.claim()) == ["v1"]
    saved = queue.offsets()
    restarted = QueueFile(queue.path)
    restarted.restore(saved)
    assert lines(restarted.claim()) == []
    with open(next(iter(restarted.claims)), "a") as late:  # a late writer after the restart
        late.write("v2\n")
    assert lines(restarted.claim()) == ["v2"]


def test_dropped_requests_carry_the_uid_the_kernel_recorded(tmp_path):
    drop = RequestDrop(tmp_path / "requests")
    drop.ensure_exists()
    assert stat.S_IMODE(os.stat(drop.directory).st_mode) == 0o3770  # setgid: every request is group zdd
    path = RequestDrop.submit(drop.directory, "web v42")
    taken = drop.take()
    assert [(e.line, e.uid) for _, e in taken] == [("web v42", os.getuid())]
    assert drop.take() != []  # still there until the requests are saved in state...
    drop.done([p for p, _ in taken])
    assert drop.take() == [] and not path.exists()  # ...then gone
    assert [p.name for p in drop.directory.iterdir()] == []  # no temporary file left behind


@pytest.mark.parametrize(
    ("plant", "why"),
    [
        (lambda p: os.mkfifo(p), "not a regular file (a FIFO)"),  # open() would block the agent
        (lambda p: p.mkdir(), "not a regular file (a directory)"),
        (lambda p: p.symlink_to(p.parent.parent / "secret.env"), "a symbolic link"),  # would leak its lines
        (lambda p: p.write_bytes(b"v1\n" * 5000), "more than 4096"),
    ],
    ids=["fifo", "directory", "symlink to a secret", "oversize"],
)
def test_a_hostile_drop_is_set_aside_and_the_others_still_count(tmp_path, caplog, plant, why):
    (tmp_path / "secret.env").write_text("DATABASE_PASSWORD=hunter2\n")
    drop = RequestDrop(tmp_path / "requests")
    drop.ensure_exists()
    plant(drop.directory / "1-1.req")
    RequestDrop.submit(drop.directory, "web v42")
    taken = drop.take()
    assert [e.line for _, e in taken] == ["web v42"]
    assert why in caplog.text and caplog.text.count("refused") == 1
    assert "hunter2" not in caplog.text
    assert os.path.lexists(drop.directory / "1-1.req.rejected")
    caplog.clear()
    drop.done([p for p, _ in taken])
    assert drop.take() == [] and caplog.text == ""  # set aside once, not logged again


def test_an_older_1770_drop_directory_is_made_setgid(tmp_path):
    directory = tmp_path / "requests"
    directory.mkdir()
    os.chmod(directory, 0o1770)
    RequestDrop(directory).ensure_exists()
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o3770


def test_entries_carry_when_they_were_written(queue, tmp_path):
    drop = RequestDrop(tmp_path / "requests")
    drop.ensure_exists()
    path = RequestDrop.submit(drop.directory, "web v41")
    os.utime(path, (1000, 1000))
    queue.path.write_text("web v42\n")
    os.utime(queue.path, (2000, 2000))
    (entry,) = queue.claim()
    ((_, dropped),) = drop.take()
    assert (dropped.written_at, entry.written_at) == (1000, 2000)


def test_a_request_dated_in_the_future_does_not_jump_the_queue(tmp_path):
    drop = RequestDrop(tmp_path / "requests")
    drop.ensure_exists()
    path = RequestDrop.submit(drop.directory, "web v9")
    os.utime(path, (time.time() + 86400, time.time() + 86400))  # touch -d tomorrow
    ((_, entry),) = drop.take()
    assert entry.written_at <= time.time()
