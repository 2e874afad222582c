// The conversation's pure rules: streamed deltas and which version of a message wins.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  activeReplies, applyDelta, callSupersedes, codePoints, isActive, isFinal, messageClass, supersedes,
  upsertToolCall, withKnownCalls, writeAgain,
} from "../../../src/aichats/web/static/messages.js";

/** A reply as the API sends it, with ``fields`` changed. */
function reply(fields = {}) {
  return {
    id: "aimsg_1", ai_chat_id: "aich_1", role: "assistant", content: "", status: "pending", error: null,
    source: "agent", attachments: [], model: "test:echo",
    usage: { input_tokens: 0, output_tokens: 0, blended_tokens: "0" }, tool_calls: [],
    created_at: "2026-01-01T00:00:00.000Z", completed_at: null, ...fields,
  };
}

/** A tool call as the API sends it, with ``fields`` changed. */
function toolCall(fields = {}) {
  return {
    id: "tcall_1", name: "current_time", server: null, arguments: "{}", status: "running", result: null,
    is_error: false, needs_approval: false, created_at: "2026-01-01T00:00:00.000Z", started_at: null,
    finished_at: null, duration_ms: null, ...fields,
  };
}

test("deltas append in order and start the stream", () => {
  const message = reply();
  assert.equal(applyDelta(message, { delta: "Hel", offset: 0 }), true);
  assert.equal(message.status, "streaming");
  assert.equal(applyDelta(message, { delta: "lo", offset: 3 }), true);
  assert.equal(message.content, "Hello");
});

test("a reply waiting for an approval streams again with its next delta", () => {
  const message = reply({ content: "Let me check.", status: "waiting" });
  assert.equal(applyDelta(message, { delta: " Done.", offset: 13 }), true);
  assert.equal(message.status, "streaming");
  assert.equal(message.content, "Let me check. Done.");
});

test("a delta without an offset appends", () => {
  const message = reply({ content: "a", status: "streaming" });
  applyDelta(message, { delta: "b" });
  assert.equal(message.content, "ab");
});

test("a replayed delta changes nothing: it overwrites from its offset", () => {
  const message = reply({ content: "Hello", status: "streaming" });
  assert.equal(applyDelta(message, { delta: "lo", offset: 3 }), true);
  assert.equal(message.content, "Hello");
  applyDelta(message, { delta: "p!", offset: 3 });
  assert.equal(message.content, "Help!");
});

test("offsets count code points, not UTF-16 units", () => {
  const message = reply({ content: "😀a", status: "streaming" });
  assert.equal(codePoints(message.content), 2);
  applyDelta(message, { delta: "b", offset: 1 });
  assert.equal(message.content, "😀b");
});

test("a gap is left out, for the completed message to fill", () => {
  const message = reply({ content: "ab", status: "streaming" });
  assert.equal(applyDelta(message, { delta: "z", offset: 5 }), false);
  assert.equal(message.content, "ab");
});

test("a final message, or none, takes no delta", () => {
  for (const status of ["completed", "failed", "cancelled"]) {
    const message = reply({ content: "done", status });
    assert.equal(isFinal(message), true);
    assert.equal(applyDelta(message, { delta: "more", offset: 4 }), false);
    assert.equal(message.content, "done");
  }
  assert.equal(applyDelta(undefined, { delta: "x", offset: 0 }), false);
});

test("a late streaming event does not undo a completion; a retry (pending) does", () => {
  const completed = reply({ status: "completed", content: "done" });
  assert.equal(supersedes(completed, reply({ status: "streaming" })), false);
  assert.equal(supersedes(completed, reply({ status: "pending" })), true);
  assert.equal(supersedes(completed, reply({ status: "failed" })), true);
  assert.equal(supersedes(undefined, reply({ status: "streaming" })), true);
  assert.equal(supersedes(reply({ status: "streaming" }), reply({ status: "completed" })), true);
});

test("the class names role and status", () => {
  assert.equal(messageClass(reply({ status: "failed" })), "msg msg-assistant msg-failed");
});

test("a stopped (cancelled) reply is final: a late streaming event does not bring it back", () => {
  const stopped = reply({ status: "cancelled", content: "Half a" });
  assert.equal(supersedes(stopped, reply({ status: "streaming" })), false);
  assert.equal(supersedes(stopped, reply({ status: "pending" })), true); // regenerated
  assert.equal(supersedes(reply({ status: "waiting" }), stopped), true);
});

test("Stop stops the replies being written, newest first", () => {
  const question = { ...reply({ id: "q", status: "completed" }), role: "user" };
  const chat = [
    question, reply({ id: "a", status: "completed" }), reply({ id: "b", status: "streaming" }),
    reply({ id: "c", status: "waiting" }), reply({ id: "d", status: "pending" }), reply({ id: "e", status: "cancelled" }),
  ];
  assert.deepEqual(chat.map(isActive), [false, false, true, true, true, false]);
  assert.deepEqual(activeReplies(chat).map((m) => m.id), ["d", "c", "b"]);
  assert.equal(isActive({ ...reply({ status: "pending" }), role: "user" }), false);
});

test("Regenerate is for the chat's last message, a reply that ended; Retry for any failed reply", () => {
  for (const status of ["completed", "cancelled"]) {
    const last = reply({ status });
    assert.equal(writeAgain(last, last), "Regenerate", status);
    assert.equal(writeAgain(last, reply({ id: "later" })), null, status);
  }
  const failed = reply({ status: "failed" });
  assert.equal(writeAgain(failed, failed), "Retry");
  assert.equal(writeAgain(failed, reply({ id: "later" })), "Retry");
  for (const status of ["pending", "streaming", "waiting"]) {
    const last = reply({ status });
    assert.equal(writeAgain(last, last), null, status);
  }
  const question = { ...reply({ status: "completed" }), role: "user" };
  assert.equal(writeAgain(question, question), null);
  assert.equal(writeAgain(reply({ status: "completed" }), undefined), null);
});

test("tool calls are added in order, replaced by id, and never stepped back", () => {
  const message = reply({ status: "streaming" });
  assert.equal(upsertToolCall(message, toolCall({ id: "t1", status: "running" })), true);
  assert.equal(upsertToolCall(message, toolCall({ id: "t2", status: "awaiting_approval" })), true);
  assert.deepEqual(message.tool_calls.map((c) => [c.id, c.status]), [["t1", "running"], ["t2", "awaiting_approval"]]);
  assert.equal(upsertToolCall(message, toolCall({ id: "t1", status: "completed", result: "12:00" })), true);
  // A "started" event replayed after the completion changes nothing.
  assert.equal(upsertToolCall(message, toolCall({ id: "t1", status: "running" })), false);
  assert.equal(message.tool_calls[0].result, "12:00");
  assert.equal(upsertToolCall(message, toolCall({ id: "t2", status: "denied" })), true);
  assert.equal(upsertToolCall(message, toolCall({ id: "t2", status: "awaiting_approval" })), false);
  assert.equal(callSupersedes(toolCall({ status: "approved" }), toolCall({ status: "running" })), true);
  assert.equal(callSupersedes(undefined, toolCall({ status: "requested" })), true);
  const old = reply({ status: "streaming" });
  delete old.tool_calls; // from a server without tools
  upsertToolCall(old, toolCall());
  assert.equal(old.tool_calls.length, 1);
});

test("a message event keeps the tool calls already known, unless the reply starts again", () => {
  const known = reply({ status: "waiting", tool_calls: [toolCall({ id: "t1", status: "completed", result: "r" }), toolCall({ id: "t2", status: "awaiting_approval" })] });
  // An event that carries no calls, or older ones.
  const merged = withKnownCalls(known, { ...reply({ status: "streaming" }), tool_calls: undefined });
  assert.deepEqual(merged.tool_calls.map((c) => c.status), ["completed", "awaiting_approval"]);
  const newer = withKnownCalls(known, reply({ status: "completed", tool_calls: [toolCall({ id: "t1", status: "running" }), toolCall({ id: "t2", status: "denied" })] }));
  assert.deepEqual(newer.tool_calls.map((c) => c.status), ["completed", "denied"]);
  assert.notEqual(merged.tool_calls[0], known.tool_calls[0]); // copies: the known message is left as it was
  // Regenerated: the reply's earlier calls go.
  assert.deepEqual(withKnownCalls(known, reply({ status: "pending" })).tool_calls, []);
  assert.deepEqual(withKnownCalls(undefined, reply({ status: "completed" })).tool_calls, []);
});
