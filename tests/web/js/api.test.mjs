// The API client's pure parts: query strings and what a failure says.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, query, reason } from "../../../src/aichats/web/static/api.js";

test("a query string leaves out empty values", () => {
  assert.equal(query({ first: 20, after: null, before: undefined, query: "" }), "?first=20");
  assert.equal(query({ query: "a b&c", only_active_crons: true }), "?query=a+b%26c&only_active_crons=true");
  assert.equal(query({ after: null }), "");
});

test("a failure says its message", () => {
  assert.equal(reason(new ApiError(404, "not_found", "no such chat")), "no such chat");
  assert.equal(reason(new Error("boom")), "boom");
  assert.equal(reason("plain"), "plain");
});
