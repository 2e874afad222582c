// @ts-check
// A reply's tool calls: one line each (name, status), folded in a <details> that opens onto
// its arguments and its result. A result is untrusted (an MCP server wrote it): like the
// arguments it goes in as text, never as markup. A call waiting for the user's approval shows
// Approve and Deny, and is open so that its arguments are read before deciding.

import { h } from "./dom.js";
import { callStatusText, durationText, prettyJson } from "./toolcalls.js";

/** @import { ToolCall } from "../api-types" */

/**
 * @typedef {(call: ToolCall, decision: "approve" | "deny", button: HTMLButtonElement) => void} Decide
 */

/**
 * The list of ``calls`` (null when there are none); ``open`` names the calls shown unfolded.
 * @param {ToolCall[]} calls
 * @param {{ onDecide: Decide, open?: Set<string> }} options
 * @returns {HTMLOListElement | null}
 */
export function toolCallList(calls, { onDecide, open = new Set() }) {
  if (!calls.length) return null;
  return h("ol", { class: "tool-calls", "aria-label": "Tool calls" }, calls.map((call) => toolCallItem(call, onDecide, open.has(call.id))));
}

/**
 * The ids of the calls unfolded in ``el`` (so that a list drawn again keeps them so).
 * @param {Element | null | undefined} el
 */
export function openCalls(el) {
  /** @type {Set<string>} */
  const open = new Set();
  for (const details of el?.querySelectorAll("details[data-call-id][open]") ?? []) {
    if (details instanceof HTMLElement && details.dataset.callId) open.add(details.dataset.callId);
  }
  return open;
}

/**
 * @param {ToolCall} call
 * @param {Decide} onDecide
 * @param {boolean} open
 */
function toolCallItem(call, onDecide, open) {
  const waiting = call.status === "awaiting_approval";
  const failed = call.status === "failed" || call.is_error;
  const duration = durationText(call.duration_ms);
  return h(
    "li",
    { class: `tool-call tool-${call.status}${failed ? " tool-error" : ""}`, "data-status": call.status },
    h(
      "details",
      { "data-call-id": call.id, open: open || waiting },
      h(
        "summary",
        {},
        h("span", { class: "tool-icon", "aria-hidden": "true" }, "⚙"),
        h("span", { class: "tool-name" }, call.name),
        h("span", { class: "tool-status" }, callStatusText(call)),
        duration ? h("span", { class: "tool-duration" }, duration) : null,
      ),
      h(
        "div",
        { class: "tool-detail" },
        call.server ? h("p", { class: "hint" }, `Tool server: ${call.server.name}`) : null,
        h("div", { class: "tool-label" }, "Arguments"),
        h("pre", { class: "tool-arguments" }, prettyJson(call.arguments) || "(none)"),
        call.result !== null && call.result !== undefined
          ? [h("div", { class: "tool-label" }, failed ? "Error" : "Result"), h("pre", { class: "tool-result" }, prettyJson(call.result))]
          : null,
      ),
    ),
    waiting
      ? h(
        "div",
        { class: "approval", role: "group", "aria-label": `Approve or deny ${call.name}` },
        h("span", {}, "This tool can change things: run it?"),
        h("button", { type: "button", class: "primary", onclick: (/** @type {MouseEvent} */ event) => onDecide(call, "approve", /** @type {HTMLButtonElement} */ (event.currentTarget)) }, "Approve"),
        h("button", { type: "button", class: "danger", onclick: (/** @type {MouseEvent} */ event) => onDecide(call, "deny", /** @type {HTMLButtonElement} */ (event.currentTarget)) }, "Deny"),
      )
      : null,
  );
}
