// The chat list's order and filter.
import assert from "node:assert/strict";
import { test } from "node:test";

import { activity, beyondLoaded, matchesTitle, sortByActivity } from "../../../src/aichats/web/static/chats.js";

/** A chat as the API sends it; ``last`` is its last message's time (null: none yet). */
function chat(id, created, last = null, title = null) {
  return {
    id, title, notification_preference: "all", agent_identifier: "support", message_count: 0,
    blended_token_usage: "0", created_at: created, updated_at: created, last_message_at: last, user: { id: "u" },
  };
}

const a = chat("a", "2026-01-01T00:00:00.000Z", "2026-01-05T00:00:00.000Z", "Revenue report");
const b = chat("b", "2026-01-03T00:00:00.000Z"); // no message yet: its creation counts
const c = chat("c", "2026-01-02T00:00:00.000Z", "2026-01-02T00:00:00.500Z");

test("activity is the last message, else the creation", () => {
  assert.equal(activity(a), a.last_message_at);
  assert.equal(activity(b), b.created_at);
});

test("most recent activity first", () => {
  assert.deepEqual(sortByActivity([c, a, b]).map((x) => x.id), ["a", "b", "c"]);
  assert.deepEqual(sortByActivity(new Map([["c", c], ["b", b]]).values()).map((x) => x.id), ["b", "c"]);
});

test("title search ignores case; an empty search matches all", () => {
  assert.equal(matchesTitle(a, "REVENUE"), true);
  assert.equal(matchesTitle(a, "costs"), false);
  assert.equal(matchesTitle(b, "x"), false); // untitled
  assert.equal(matchesTitle(b, ""), true);
});

test("a chat older than every loaded one waits for its page", () => {
  const old = chat("old", "2025-12-01T00:00:00.000Z");
  assert.equal(beyondLoaded(old, [a, c], true), true);
  assert.equal(beyondLoaded(old, [a, c], false), false); // all pages loaded: it belongs now
  assert.equal(beyondLoaded(old, [], true), false);
});

test("a chat newer than the oldest loaded one is listed, whatever order they were loaded in", () => {
  const middle = chat("m", "2026-01-04T00:00:00.000Z");
  // c is the oldest; a (newer) was added last by a refresh of the first page.
  assert.equal(beyondLoaded(middle, [c, a], true), false);
});
