// @ts-check
// The day's token usage in the top bar (GET /usage): what the user's replies used today
// against their daily token budget, and when it resets. Refreshed when a chat's usage moves.

import { get } from "./api.js";
import { formatNumber, when } from "./format.js";
import { on } from "./state.js";

/** @import { UsageSummary } from "../api-types" */

/**
 * What the top bar says of ``usage``, and whether the budget is used up. Pure (node tests it).
 * @param {UsageSummary} usage
 * @returns {{ text: string, title: string, over: boolean }}
 */
export function usageLine(usage) {
  const used = formatNumber(usage.blended_tokens);
  const resets = `resets ${when(usage.resets_at)}`;
  if (usage.token_budget === null) {
    return { text: `${used} tokens today`, title: `Blended tokens used today (UTC); no daily limit`, over: false };
  }
  const over = usage.remaining_tokens !== null && Number(usage.remaining_tokens) <= 0;
  const budget = formatNumber(usage.token_budget);
  return {
    text: over ? `Daily token budget used up (${used} / ${budget})` : `${used} / ${budget} tokens today`,
    title: over
      ? `New messages wait until the budget ${resets}`
      : `${formatNumber(usage.remaining_tokens ?? 0)} tokens left today; the budget ${resets}`,
    over,
  };
}

let pending = 0;

/** Read the usage again, soon (several changes at once make one request). */
export function refreshUsage() {
  clearTimeout(pending);
  pending = window.setTimeout(show, 250);
}

async function show() {
  const el = document.getElementById("day-usage"); // not dom.js's byId: this module also runs in node's tests
  if (!el) return;
  try {
    /** @type {UsageSummary} */
    const usage = await get("usage");
    const line = usageLine(usage);
    el.textContent = line.text;
    el.title = line.title;
    el.classList.toggle("over", line.over);
    el.hidden = false;
  } catch {
    el.hidden = true; // signed out, or the server is away: say nothing rather than something stale
  }
}

/** Show the usage now, and again whenever a chat's usage moves or something happens. */
export function startUsage() {
  on("chat", refreshUsage); // a reply completed (chat.updated carries the chat's new usage)
  on("activity", refreshUsage);
  show();
}
