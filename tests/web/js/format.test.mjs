// How times and counts read.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ago, counted, when } from "../../../src/aichats/web/static/format.js";

const NOW = Date.parse("2026-03-01T12:00:00.000Z");
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

test("anything within a minute is now", () => {
  assert.equal(ago("2026-03-01T11:59:01.000Z", NOW), relative.format(0, "second"));
  assert.equal(ago("2026-03-01T12:00:30.000Z", NOW), relative.format(0, "second"));
});

test("larger steps round to their unit", () => {
  assert.equal(ago("2026-03-01T11:55:00.000Z", NOW), relative.format(-5, "minute"));
  assert.equal(ago("2026-03-01T09:00:00.000Z", NOW), relative.format(-3, "hour"));
  assert.equal(ago("2026-02-28T12:00:00.000Z", NOW), relative.format(-1, "day"));
});

test("no instant, no text", () => {
  assert.equal(ago(null, NOW), "");
  assert.equal(when(undefined), "");
});

test("counts take their noun's number, decimals included", () => {
  assert.equal(counted(1, "message", "messages"), "1 message");
  assert.equal(counted(2, "message", "messages"), "2 messages");
  assert.equal(counted("0", "token", "tokens"), "0 tokens");
  assert.match(counted("1.5", "token", "tokens"), /^1.5 tokens$/);
});
