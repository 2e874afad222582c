// @ts-check
// How a conversation's messages change as events arrive. Pure (no DOM): tests/web/js runs it in node.

/** @import { Message, MessageDelta } from "../api-types" */

/**
 * Length in code points, the unit of a delta's ``offset``.
 * @param {string} text
 */
export const codePoints = (text) => [...text].length;

/**
 * A completed or failed message: its text will not change.
 * @param {Message} message
 */
export function isFinal(message) {
  return message.status === "completed" || message.status === "failed";
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
  if (message.status === "pending") message.status = "streaming";
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
