// @ts-check
// How a conversation's messages change as events arrive. Pure (no DOM): tests/web/js runs it in node.

/** @import { Message, MessageDelta, ToolCall } from "../api-types" */

/**
 * Length in code points, the unit of a delta's ``offset``.
 * @param {string} text
 */
export const codePoints = (text) => [...text].length;

/**
 * A completed, failed or cancelled (stopped) message: its text will not change.
 * @param {Message} message
 */
export function isFinal(message) {
  return message.status === "completed" || message.status === "failed" || message.status === "cancelled";
}

/**
 * A reply still being written: pending, streaming, or waiting for a tool call's approval
 * (what Stop stops).
 * @param {Message} message
 */
export function isActive(message) {
  return message.role === "assistant" && (message.status === "pending" || message.status === "streaming" || message.status === "waiting");
}

/**
 * The replies that Stop cancels: every active one, newest first (so that a queued one is
 * cancelled before the one ahead of it ends and lets it start).
 * @param {Iterable<Message>} messages in the chat's order
 */
export function activeReplies(messages) {
  return [...messages].filter(isActive).reverse();
}

/**
 * How ``message`` may be written again, if it may: "Retry" for a failed reply (anywhere in the
 * chat), "Regenerate" for the chat's last message (``last``) once it ended (completed, or
 * stopped); null otherwise.
 * @param {Message} message
 * @param {Message | undefined} last
 * @returns {"Retry" | "Regenerate" | null}
 */
export function writeAgain(message, last) {
  if (message.role !== "assistant") return null;
  if (message.status === "failed") return "Retry";
  return isFinal(message) && last?.id === message.id ? "Regenerate" : null;
}

/** @param {Message} message */
export function messageClass(message) {
  return `msg msg-${message.role} msg-${message.status}`;
}

/**
 * Apply a streamed delta to ``message`` (in place); returns whether it changed. A delta
 * replayed (its offset already passed) overwrites from there, so applying one twice changes
 * nothing; a delta past the end (a gap) is left out: the completed message brings the whole text.
 * @param {Message | undefined} message
 * @param {Pick<MessageDelta, "delta" | "offset">} delta
 */
export function applyDelta(message, { delta, offset }) {
  if (!message || isFinal(message)) return false; // a replayed delta of a reply already complete
  const have = codePoints(message.content);
  if (offset === undefined || offset === have) {
    message.content += delta;
  } else if (offset < have) {
    message.content = [...message.content].slice(0, offset).join("") + delta;
  } else {
    return false;
  }
  // Text means the reply is being written: it started, or went on after an approval.
  if (message.status === "pending" || message.status === "waiting") message.status = "streaming";
  return true;
}

/**
 * Whether ``incoming`` should replace ``known`` (the version shown): a late "created"
 * (streaming) event must not undo a completion already shown.
 * @param {Message | undefined} known
 * @param {Message} incoming
 */
export function supersedes(known, incoming) {
  return !(known && isFinal(known) && !isFinal(incoming) && incoming.status !== "pending");
}

// How far along a tool call is: an event replayed late (a "started" after its "completed")
// must not step it back.
const CALL_STAGES = {
  requested: 0,
  awaiting_approval: 1,
  approved: 2,
  running: 3,
  denied: 4,
  completed: 4,
  failed: 4,
};

/**
 * Whether ``incoming`` should replace ``known`` (the version of a tool call shown).
 * @param {ToolCall | undefined} known
 * @param {ToolCall} incoming
 */
export function callSupersedes(known, incoming) {
  return !known || (CALL_STAGES[incoming.status] ?? 0) >= (CALL_STAGES[known.status] ?? 0);
}

/**
 * Put ``call`` in ``message``'s tool calls (in place), replacing the one with its id unless
 * that one is further along; returns whether it changed.
 * @param {Message} message
 * @param {ToolCall} call
 */
export function upsertToolCall(message, call) {
  const calls = (message.tool_calls ??= []);
  const at = calls.findIndex((known) => known.id === call.id);
  if (at < 0) {
    calls.push(call);
    return true;
  }
  if (!callSupersedes(calls[at], call)) return false;
  calls[at] = call;
  return true;
}

/**
 * ``incoming`` (a message from an event or an answer) with the tool calls already known kept
 * where it has fewer or older ones: a message event may carry no calls, or calls that a
 * tool-call event has since moved on. A pending reply (new, or written again) starts afresh.
 * @param {Message | undefined} known
 * @param {Message} incoming
 * @returns {Message}
 */
export function withKnownCalls(known, incoming) {
  if (incoming.status === "pending") return { ...incoming, tool_calls: [...(incoming.tool_calls ?? [])] };
  const calls = (known?.tool_calls ?? []).map((call) => ({ ...call }));
  const merged = { ...incoming, tool_calls: calls };
  for (const call of incoming.tool_calls ?? []) upsertToolCall(merged, call);
  return merged;
}
