// The conversation's pure rules: streamed deltas and which version of a message wins.
import assert from "node:assert/strict";
import { test } from "node:test";

import { applyDelta, codePoints, isFinal, messageClass, supersedes } from "../../../src/aichats/web/static/messages.js";

/** A reply as the API sends it, with ``fields`` changed. */
function reply(fields = {}) {
  return {
    id: "aimsg_1", ai_chat_id: "aich_1", role: "assistant", content: "", status: "pending", error: null,
    source: "agent", attachments: [], model: "test:echo",
    usage: { input_tokens: 0, output_tokens: 0, blended_tokens: "0" },
    created_at: "2026-01-01T00:00:00.000Z", completed_at: null, ...fields,
  };
}

test("deltas append in order and start the stream", () => {
  const message = reply();
  assert.equal(applyDelta(message, { delta: "Hel", offset: 0 }), true);
  assert.equal(message.status, "streaming");
  assert.equal(applyDelta(message, { delta: "lo", offset: 3 }), true);
  assert.equal(message.content, "Hello");
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
  for (const status of ["completed", "failed"]) {
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
