// throttle (timing.js): at most once per interval, and the last call never lost.
import assert from "node:assert/strict";
import { test } from "node:test";

import { throttle } from "../../../src/aichats/web/static/timing.js";

/** A clock whose time and timers the test moves. */
function fakeClock() {
  let time = 0;
  /** @type {{ at: number, fn: () => void, id: number }[]} */
  let timers = [];
  let ids = 0;
  return {
    now: () => time,
    setTimer: (fn, ms) => {
      ids += 1;
      timers.push({ at: time + ms, fn, id: ids });
      return ids;
    },
    clearTimer: (id) => {
      timers = timers.filter((t) => t.id !== id);
    },
    advance(ms) {
      time += ms;
      for (const due of timers.filter((t) => t.at <= time)) {
        timers = timers.filter((t) => t !== due);
        due.fn();
      }
    },
    pending: () => timers.length,
  };
}

test("the first call runs at once; calls within the interval fold into one at its end", () => {
  const clock = fakeClock();
  const calls = [];
  const fn = throttle(() => calls.push(clock.now()), 100, clock);
  fn();
  assert.deepEqual(calls, [0]);
  clock.advance(10);
  fn();
  clock.advance(10);
  fn();
  fn();
  assert.deepEqual(calls, [0]);
  assert.equal(clock.pending(), 1);
  clock.advance(80);
  assert.deepEqual(calls, [0, 100]);
  clock.advance(500);
  fn(); // long after: at once again
  assert.deepEqual(calls, [0, 100, 600]);
});

test("flush runs a waiting call now; cancel drops it", () => {
  const clock = fakeClock();
  let runs = 0;
  const fn = throttle(() => { runs += 1; }, 100, clock);
  fn();
  fn();
  fn.flush();
  assert.equal(runs, 2);
  assert.equal(clock.pending(), 0);
  fn.flush(); // nothing waiting: nothing runs
  assert.equal(runs, 2);
  fn();
  fn.cancel();
  clock.advance(1000);
  assert.equal(runs, 2);
});
