// Unit tests of paycast-realtime.js's pure parts: backoff, ack batching, ordering.
// Run: node --test clients/js/test/  (tests/unit/test_js_client.py runs it from pytest).
// The whole client against a real server is tested in Chromium (tests/e2e/test_realtime_js.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { AckBatcher, backoffDelay, expiryMs, SeqGate } from "../paycast-realtime.js";

/** A clock the test moves by hand: timers fire only in advance(). */
function manualClock() {
  let now = 0;
  let next = 1;
  const timers = new Map();
  return {
    setTimeout(fn, ms) { const id = next++; timers.set(id, { at: now + ms, fn }); return id; },
    clearTimeout(id) { timers.delete(id); },
    now: () => now,
    pending: () => timers.size,
    advance(ms) {
      const until = now + ms;
      for (;;) {
        const due = [...timers.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = until;
    },
  };
}

test("backoff: the cap doubles per attempt up to maxMs, and the delay is uniform below it (full jitter)", () => {
  const options = { baseMs: 500, maxMs: 30000 };
  const caps = [0, 1, 2, 3, 4, 5, 6, 7, 50].map((n) => backoffDelay(n, options, () => 0.999999) + 1);
  assert.deepEqual(caps, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  for (const n of [0, 3, 10, 1000]) assert.equal(backoffDelay(n, options, () => 0), 0);
  assert.equal(backoffDelay(2, options, () => 0.5), 1000);
});

test("backoff: with Math.random the delays spread over the whole range and never exceed the cap", () => {
  const delays = Array.from({ length: 2000 }, () => backoffDelay(4, { baseMs: 100, maxMs: 60000 }));
  assert.ok(delays.every((d) => Number.isInteger(d) && d >= 0 && d < 1600), "within [0, 1600)");
  const low = delays.filter((d) => d < 400).length, high = delays.filter((d) => d >= 1200).length;
  // Uniform: a quarter each side (2000 draws; 300..700 is far outside chance).
  assert.ok(low > 300 && low < 700 && high > 300 && high < 700, `low ${low} high ${high}`);
});

test("acks: sent once `count` events are pending, with the highest seq", () => {
  const sent = [];
  const clock = manualClock();
  const acks = new AckBatcher({ count: 3, delayMs: 1000, send: (seq) => sent.push(seq), clock });
  acks.delivered(5);
  acks.delivered(6);
  assert.deepEqual(sent, []);
  acks.delivered(9);
  assert.deepEqual(sent, [9]);
  assert.equal(clock.pending(), 0, "the timer is cancelled by a count flush");
  clock.advance(5000);
  assert.deepEqual(sent, [9], "nothing more to send");
});

test("acks: sent `delayMs` after the first pending event when fewer than `count` arrive", () => {
  const sent = [];
  const clock = manualClock();
  const acks = new AckBatcher({ count: 20, delayMs: 1000, send: (seq) => sent.push(seq), clock });
  acks.delivered(1);
  clock.advance(600);
  acks.delivered(2);  // does not restart the timer
  clock.advance(399);
  assert.deepEqual(sent, []);
  clock.advance(1);
  assert.deepEqual(sent, [2]);
  acks.delivered(3);
  clock.advance(1000);
  assert.deepEqual(sent, [2, 3]);
});

test("acks: reset drops what is pending (a new connection resumes from after_seq), flush with nothing sends nothing", () => {
  const sent = [];
  const clock = manualClock();
  const acks = new AckBatcher({ count: 5, delayMs: 100, send: (seq) => sent.push(seq), clock });
  acks.flush();
  acks.delivered(7);
  acks.reset();
  clock.advance(1000);
  assert.deepEqual(sent, []);
  acks.delivered(8);
  acks.flush();
  assert.deepEqual(sent, [8]);
});

test("ordering: each seq is handed over once, in order; replays and steps back are dropped, gaps allowed", () => {
  const gate = new SeqGate(null);
  const stream = [1, 2, 3, 2, 3, 4, 7, 5, 7, 8, 8, 12];
  const handed = stream.filter((seq) => gate.admit(seq));
  assert.deepEqual(handed, [1, 2, 3, 4, 7, 8, 12]);
  assert.equal(gate.lastSeq, 12);
});

test("ordering: resuming after a stored seq drops the replayed overlap", () => {
  const gate = new SeqGate(40);
  assert.deepEqual([39, 40, 41, 41, 42].filter((seq) => gate.admit(seq)), [41, 42]);
});

test("ordering: malformed seqs are never handed over", () => {
  const gate = new SeqGate(null);
  for (const seq of [0, -1, 1.5, "3", null, undefined, NaN, 2 ** 60]) assert.equal(gate.admit(seq), false, String(seq));
  assert.equal(gate.lastSeq, null);
});

test("token expiry: the API's ISO 8601 expires_at and unix seconds both read as ms; anything else as unknown", () => {
  assert.equal(expiryMs("2026-12-06T01:00:00.000Z"), Date.UTC(2026, 11, 6, 1, 0, 0));
  assert.equal(expiryMs(1796000000), 1796000000000);
  for (const value of [undefined, null, "soon", NaN, {}]) assert.equal(expiryMs(value), null, String(value));
});
