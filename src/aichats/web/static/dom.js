// Building the page. Every piece of user or model text goes in as a text node, never as
// HTML, so a message or a title can not inject markup (there is no innerHTML here).

/** An element: h("a", {href: "#/", class: "x", onclick: fn}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Append children: nodes as they are, anything else as text. */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const STEPS = [[60, "second"], [60, "minute"], [24, "hour"], [7, "day"], [4.35, "week"], [12, "month"], [Infinity, "year"]];

/** "now" (under a minute), "5 minutes ago", "yesterday"... for an ISO instant. */
export function ago(iso) {
  if (!iso) return "";
  let amount = (new Date(iso).getTime() - Date.now()) / 1000;
  // Seconds would say "1 second ago" over "now" for two messages a moment apart, and go
  // stale between refreshes: anything within a minute is "now".
  if (Math.abs(amount) < 60) return relative.format(0, "second");
  for (const [size, unit] of STEPS) {
    if (Math.abs(amount) < size) return relative.format(Math.round(amount), unit);
    amount /= size;
  }
  return "";
}

/** A local date and time, in the browser's zone or in ``timeZone``. */
export function when(iso, timeZone) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short", timeZone }).format(new Date(iso));
}

/** A <time> element showing a relative time, with the exact one as its tooltip; it is kept
 * current (every relative time on the page is recomputed together, see refreshTimes). */
export function timeEl(iso, attrs = {}) {
  return h("time", { ...attrs, datetime: iso, title: when(iso), "data-ago": "" }, ago(iso));
}

/** Recompute every relative time shown, all against the same instant. */
export function refreshTimes() {
  for (const el of document.querySelectorAll("time[data-ago]")) {
    const text = ago(el.getAttribute("datetime"));
    if (el.textContent !== text) el.textContent = text;
  }
}

// Every 30 s (the finest step shown is a minute), and when the page is seen again.
setInterval(refreshTimes, 30_000);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") refreshTimes();
});

const plurals = new Intl.PluralRules("en");
/** "1 message", "2 messages", "1.5 tokens": ``count`` (a number or a decimal string) with its noun. */
export function counted(count, one, many) {
  return `${formatNumber(count)} ${plurals.select(Number(count)) === "one" ? one : many}`;
}

const numbers = new Intl.NumberFormat();
export function formatNumber(value) {
  return numbers.format(Number(value));
}

/** Call ``fn`` once the calls stop for ``ms``. */
export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

let toastTimer;
/** A short message at the bottom of the screen (announced to screen readers). */
export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

/** Replace an element's children (skipping null and false, unlike replaceChildren). */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}
