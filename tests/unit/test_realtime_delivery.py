"""The realtime delivery state machine, driven by hand: no database, no socket,
no trio — each test feeds inputs and checks the decisions (what to write, when
to re-read, when to close)."""

from __future__ import annotations

import json

from domain.realtime import Message, event_frame
from domain.realtime_delivery import (ABORT, CLOSE_POLICY, CLOSE_TRY_AGAIN_LATER, MAX_INVALID_PER_MINUTE, SLOW,
                                      WAKE, Acked, Batch, CheckTopic, CloseSocket, Delivery, ReadLog, Reply, Send,
                                      Wait, WriteNow, assemble, gaps)


class Log:
    """One client's committed messages (plain data)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def add(self, n: int = 1, device: str | None = None, topic: str = "client:c") -> Batch:
        first = len(self.messages) + 1
        new = [Message(s, topic, device, event_frame(s, topic, {"n": s})) for s in range(first, first + n)]
        self.messages += new
        return Batch(first, first + n - 1, tuple(new))

    def after(self, seq: int, limit: int) -> list[Message]:
        return [m for m in self.messages if m.seq > seq][:limit]


def seqs(frames: list[str]) -> list[int]:
    return [json.loads(f)["seq"] for f in frames if json.loads(f)["type"] == "event"]


def drain(d: Delivery, log: Log, now: float = 0.0) -> list[str | bytes]:
    """Carry out writer steps until the writer would wait; what was written, in order."""
    out: list[str | bytes] = []
    while True:
        step = d.next_step(now)
        if isinstance(step, Wait):
            return out
        if isinstance(step, Send):
            for part in step.parts:
                out += [part] if isinstance(part, bytes) else part
        elif isinstance(step, ReadLog):
            out += d.replayed(log.after(step.after_seq, step.limit), step.limit)
        else:
            raise AssertionError(step)


def new(device=None, capacity=4, slow_s=60.0) -> Delivery:
    return Delivery(device, capacity=capacity, slow_s=slow_s, max_frame=4096, now=0.0)


def test_live_batches_offered_during_a_replay_are_read_again_once_in_order():
    log, d = Log(), new()
    for _ in range(5):
        log.add()
    d.start(after_seq=0)
    step = d.next_step(0)
    assert step == ReadLog(0, 500)
    page = log.after(0, 500)  # the read returns seqs 1-5 ...
    live = [log.add(), log.add(2)]  # ... while 6-8 commit and are offered
    assert [d.offer(b, 0) for b in live] == [None, None]
    assert d.lagging
    out = d.replayed(page)
    assert seqs(out) == [1, 2, 3, 4, 5]
    out += drain(d, log)  # lagging: reads 6-8 from the log
    assert d.offer(live[1], 0) is None  # a late duplicate is dropped
    assert seqs(out) == list(range(1, 9))
    assert d.cursor == 8


def test_a_batch_that_skips_seqs_makes_the_connection_read_the_gap():
    log, d = Log(), new()
    for _ in range(3):
        log.add()
    d.start(None, latest=3)
    assert isinstance(d.next_step(0), Wait)
    log.add()  # seq 4: its notification was lost
    assert d.offer(log.add(), 0) is WAKE  # seq 5 arrives: queued, not written directly
    assert seqs(drain(d, log)) == [4, 5]


def test_a_full_queue_lags_and_is_recovered_from_the_log_without_loss():
    log, d = Log(), new(capacity=2)
    d.start(None, latest=0)
    d.next_step(0)
    first = d.offer(log.add(), 0.0)
    assert isinstance(first, WriteNow)  # idle: the hub may write it itself ...
    assert d.written_now(first, None, 0.0) is WAKE  # ... the socket said "not now": queued, writer woken
    for _ in range(19):
        d.offer(log.add(), 0.0)
    assert d.lagging
    assert d.pressure_since is not None
    assert d.closing is None
    assert len(d.queue) == 2
    assert seqs(drain(d, log, 1.0)) == list(range(1, 21))
    assert d.pressure_since is None
    assert not d.lagging


def test_a_queue_that_stays_full_closes_the_connection_with_1013():
    log, d = Log(), new(capacity=2, slow_s=5.0)
    d.start(None, latest=0)
    for _ in range(3):
        d.offer(log.add(), 0.0)
    assert d.closing is None
    assert d.tick(4.0, 100, 100) is None
    assert d.tick(5.0, 100, 100) is SLOW
    assert d.next_step(5.0) == CloseSocket(CLOSE_TRY_AGAIN_LATER, d.closing[1])
    assert d.offer(log.add(), 6.0) is None  # closing: nothing more is taken


def test_device_and_muted_topics_filter_but_the_cursor_moves_on():
    log, d = Log(), new(device="phone")
    d.start(None, latest=0)
    d.muted.add("payment:p1")
    for batch in (log.add(device="laptop"), log.add(topic="payment:p1"), log.add(device="phone"), log.add()):
        d.offer(batch, 0)
    assert seqs(drain(d, log)) == [3, 4]
    assert d.cursor == 4
    assert d.received('{"type": "subscribe", "topic": "payment:p1"}', 1) == CheckTopic("payment:p1")
    assert d.topic_checked("payment:p1", True) is None
    assert not d.muted
    assert d.topic_checked("order:o1", False).frame.startswith('{"type":"error","code":"topic_forbidden"')
    direct = d.offer(log.add(topic="payment:p1"), 1)  # the writer waits: written by the caller
    assert seqs(direct.frames) == [5]
    assert d.written_now(direct, b"", 1) is None
    assert d.cursor == 5


def test_an_idle_connection_is_written_directly_and_leftovers_go_first():
    log, d = Log(), new(capacity=8)
    d.start(None, latest=0)
    assert isinstance(d.next_step(0), Wait)
    assert d.waiting
    first = d.offer(log.add(), 0)
    assert isinstance(first, WriteNow)
    assert seqs(first.frames) == [1]
    assert d.written_now(first, b"", 0) is None
    assert d.cursor == 1
    assert d.waiting  # all went out
    second = d.offer(log.add(2), 0)
    assert d.written_now(second, b"tail-of-3", 0) is WAKE  # the kernel took part: the rest is queued
    assert d.offer(log.add(), 0) is None  # queued behind the leftover bytes (writer already woken)
    assert drain(d, log) == [b"tail-of-3", log.messages[3].frame]
    # A catch-up requested while leftover bytes wait must not overtake them.
    d.offer(log.add(device="other"), 0)  # idle, not for this device: only the cursor moves
    assert d.cursor == 5
    third = d.offer(log.add(), 0)
    d.written_now(third, b"partial", 0)
    lost = log.add()  # seq 7: its notification was lost, a catch-up is asked for
    d.catch_up()
    assert drain(d, log) == [b"partial", lost.messages[0].frame]


def test_pings_idle_timeout_and_stuck_sends():
    d = new()
    d.start(None, latest=0)
    d.next_step(0)
    ping = d.tick(10.0, 10.0, 60.0)
    assert isinstance(ping, WriteNow)
    assert ping.frames == ['{"type":"ping"}']
    assert d.written_now(ping, b"", 10.0) is None
    assert d.waiting
    d.received('{"type": "pong"}', 30.0)
    assert d.tick(89.0, 1000, 60.0) is None
    assert d.tick(91.0, 1000, 60.0) is WAKE
    assert d.closing[0] == 1001
    stuck = new()
    stuck.send_began(0.0)
    assert stuck.tick(61.0, 1000, 60.0) is ABORT


def test_a_head_start_brings_only_the_first_ping_forward():
    d = Delivery(None, capacity=8, slow_s=5.0, max_frame=4096, now=0.0, ping_head_start=4.0)
    d.start(None, latest=0)
    d.next_step(0)
    assert d.tick(5.9, 10.0, 60.0) is None
    first = d.tick(6.0, 10.0, 60.0)
    assert isinstance(first, WriteNow)
    assert first.frames == ['{"type":"ping"}']
    d.written_now(first, b"", 6.0)
    assert d.tick(15.9, 10.0, 60.0) is None  # then a full interval, in its new phase
    assert isinstance(d.tick(16.0, 10.0, 60.0), WriteNow)


def test_acks_only_report_progress_and_invalid_frames_get_replies_then_1008():
    d = new()
    d.start(None, latest=7)
    assert d.received('{"type": "ack", "seq": 5}', 0) == Acked(5)
    assert d.received('{"type": "ack", "seq": 3}', 0) is None  # not higher: nothing to persist
    assert d.received('{"type": "ack", "seq": 99}', 0) == Acked(7)  # never beyond what was sent
    assert d.acked == 7
    for _ in range(MAX_INVALID_PER_MINUTE):
        assert isinstance(d.received("nope", 1), Reply)
    d.received("nope", 1)
    assert d.closing[0] == CLOSE_POLICY


def test_a_failed_read_is_retried_later_and_the_replay_reports_truncation():
    log, d = Log(), new()
    for _ in range(3):
        log.add()
    d.start(after_seq=0)
    assert isinstance(d.next_step(0), ReadLog)
    d.read_failed(0.0)
    assert d.next_step(0.5) == Wait(1.0)
    assert isinstance(d.next_step(1.0), ReadLog)
    out = d.replayed(log.messages[1:])  # seq 1 was purged
    assert json.loads(out[0])["code"] == "replay_truncated"
    assert seqs(out) == [2, 3]


def test_the_router_orders_merges_and_finds_gaps_once_for_all_connections():
    log = Log()
    for _ in range(7):
        log.add()
    m = log.messages
    # Notifications of seqs 4-5 and 2 arrived (3 is late, 6 never came); 1 was routed before.
    assert gaps(1, [(4, 5), (2, 2)]) == [(3, 3)]
    assert gaps(1, [(4, 5), (7, 7)]) == [(2, 3), (6, 6)]
    assert gaps(None, [(4, 5)]) == []
    assert gaps(5, [(3, 5)]) == []
    # Read from the log (3) plus what came inline, out of order and with a repeat of 1.
    batches = assemble(1, [m[3], m[4], m[1], m[2], m[0], m[6]])
    assert [(b.first, b.last) for b in batches] == [(2, 5), (7, 7)]
    d = new()
    d.start(None, latest=1)
    d.next_step(0)
    direct = d.offer(batches[0], 0)
    assert isinstance(direct, WriteNow)
    assert seqs(direct.frames) == [2, 3, 4, 5]  # one write for four messages
    assert d.written_now(direct, b"", 0) is None
    assert d.offer(batches[1], 0) is WAKE  # 6 still missing: queued, and the writer reads 6 from the log
    assert seqs(drain(d, log)) == [6, 7]
