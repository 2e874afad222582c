// How tool calls, servers and tools read (toolcalls.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import { callStatusText, durationText, groupTools, headersOf, prettyJson } from "../../../src/aichats/web/static/toolcalls.js";

/** A tool call as the API sends it, with ``fields`` changed. */
function call(fields = {}) {
  return {
    id: "tcall_1", name: "revenue__weekly_revenue", server: { id: "tsrv_1", name: "revenue" }, arguments: "{}",
    status: "completed", result: "ok", is_error: false, needs_approval: false, created_at: "2026-12-06T09:00:00.000Z",
    started_at: null, finished_at: null, duration_ms: 12, ...fields,
  };
}

test("arguments and results are indented when they are JSON, kept as they are when not", () => {
  assert.equal(prettyJson('{"week":"2026-W49","n":[1,2]}'), '{\n  "week": "2026-W49",\n  "n": [\n    1,\n    2\n  ]\n}');
  assert.equal(prettyJson("{not json"), "{not json");
  assert.equal(prettyJson("Revenue: 48,210 EUR"), "Revenue: 48,210 EUR");
  assert.equal(prettyJson(""), "");
  assert.equal(prettyJson(null), "");
});

test("a call's status in words", () => {
  assert.equal(callStatusText(call()), "Done");
  assert.equal(callStatusText(call({ is_error: true })), "Error");
  assert.equal(callStatusText(call({ status: "awaiting_approval" })), "Waiting for your approval");
  assert.equal(callStatusText(call({ status: "running" })), "Running…");
  assert.equal(callStatusText(call({ status: "denied" })), "Denied");
  assert.equal(callStatusText(call({ status: "failed" })), "Failed");
});

test("durations", () => {
  assert.equal(durationText(null), "");
  assert.equal(durationText(12), "12 ms");
  assert.equal(durationText(1520), "1.5 s");
  assert.equal(durationText(12_400), "12 s");
  assert.equal(durationText(125_000), "2 min 5 s");
});

test("tools are grouped by where they come from, each group by name", () => {
  const tool = (name, kind) => ({ name, tool: name, description: "", server: null, kind, read_only: true, destructive: false, needs_approval: false });
  const groups = groupTools([tool("crm__find", "operator"), tool("mine__b", "user"), tool("fetch_url", "builtin"), tool("current_time", "builtin"), tool("mine__a", "user")]);
  assert.deepEqual(groups.map((g) => [g.kind, g.label, g.tools.map((t) => t.name)]), [
    ["builtin", "Built in", ["current_time", "fetch_url"]],
    ["operator", "From the operator", ["crm__find"]],
    ["user", "Yours", ["mine__a", "mine__b"]],
  ]);
  assert.deepEqual(groupTools([]).map((g) => g.tools.length), [0, 0, 0]);
});

test("a server's headers from the form's rows", () => {
  assert.deepEqual(headersOf([]), { headers: {} });
  assert.deepEqual(headersOf([{ name: " Authorization ", value: " Bearer x " }, { name: "", value: "" }]), { headers: { Authorization: "Bearer x" } });
  assert.deepEqual(headersOf([{ name: "", value: "orphan" }]), { error: "Each header needs a name." });
  assert.deepEqual(headersOf([{ name: "X-A", value: "1" }, { name: "x-a", value: "2" }]), { error: "The header “x-a” is given twice." });
  assert.deepEqual(headersOf([{ name: "Bad Name", value: "1" }]), { error: "“Bad Name” is not a header name." });
});
