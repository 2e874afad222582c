// @ts-check
// Calling a function less often than it is asked for. Pure (no DOM): tests/web/js runs it in node.

/**
 * ``fn`` at most once every ``ms``: the first call runs at once, the calls within the next
 * ``ms`` are folded into one that runs when it ends, so the last call is never lost.
 * ``flush()`` runs a call that is waiting now; ``cancel()`` drops it.
 * @param {() => void} fn
 * @param {number} ms
 * @param {{ now?: () => number, setTimer?: (fn: () => void, ms: number) => unknown, clearTimer?: (timer: any) => void }} [clock]
 */
export function throttle(fn, ms, { now = () => Date.now(), setTimer = setTimeout, clearTimer = clearTimeout } = {}) {
  let last = -Infinity;
  /** @type {unknown} */
  let timer = null;
  const run = () => {
    timer = null;
    last = now();
    fn();
  };
  const throttled = () => {
    if (timer !== null) return;
    const wait = last + ms - now();
    if (wait <= 0) run();
    else timer = setTimer(run, wait);
  };
  throttled.flush = () => {
    if (timer === null) return;
    clearTimer(timer);
    run();
  };
  throttled.cancel = () => {
    if (timer !== null) clearTimer(timer);
    timer = null;
  };
  return throttled;
}
