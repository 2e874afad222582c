// @ts-check
// Building the page. Every piece of user or model text goes in as a text node, never as
// HTML, so a message or a title can not inject markup (there is no innerHTML here).

import { ago, when } from "./format.js";

/**
 * What ``h`` and ``append`` take as children: nodes as they are, anything else as text;
 * null, undefined and false are left out, arrays are flattened.
 * @typedef {Node | string | number | boolean | null | undefined | Child[]} Child
 */

/**
 * An element: h("a", {href: "#/", class: "x", onclick: fn}, "text", child, ...).
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any>} [attrs] ``on...`` ones are listeners, ``class`` and ``value`` properties
 * @param {...Child} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "value" && "value" in el) el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/**
 * Append children: nodes as they are, anything else as text.
 * @template {Element} E
 * @param {E} el
 * @param {Child[]} children
 * @returns {E}
 */
export function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/**
 * @template {Element} E
 * @param {E} el
 * @returns {E}
 */
export function clear(el) {
  el.replaceChildren();
  return el;
}

/**
 * The element with ``id``, which the page must have (index.html): a missing one is a bug.
 * @param {string} id
 * @returns {HTMLElement}
 */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el;
}

/**
 * A <time> element showing a relative time, with the exact one as its tooltip; it is kept
 * current (every relative time on the page is recomputed together, see refreshTimes).
 * @param {string} iso
 * @param {Record<string, any>} [attrs]
 */
export function timeEl(iso, attrs = {}) {
  return h("time", { ...attrs, datetime: iso, title: when(iso), "data-ago": "" }, ago(iso));
}

/** Recompute every relative time shown, all against the same instant. */
export function refreshTimes() {
  const now = Date.now();
  for (const el of document.querySelectorAll("time[data-ago]")) {
    const text = ago(el.getAttribute("datetime"), now);
    if (el.textContent !== text) el.textContent = text;
  }
}

// Every 30 s (the finest step shown is a minute), and when the page is seen again.
setInterval(refreshTimes, 30_000);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") refreshTimes();
});

/**
 * Call ``fn`` once the calls stop for ``ms``.
 * @template {unknown[]} A
 * @param {(...args: A) => void} fn
 * @param {number} ms
 * @returns {(...args: A) => void}
 */
export function debounce(fn, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let toastTimer;
/**
 * A short message at the bottom of the screen (announced to screen readers).
 * @param {string} text
 */
export function toast(text) {
  const el = byId("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

/**
 * Replace an element's children (skipping null and false, unlike replaceChildren).
 * @template {Element} E
 * @param {E} el
 * @param {...Child} children
 * @returns {E}
 */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}
