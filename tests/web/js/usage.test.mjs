// What the top bar says of the day's token usage.
import assert from "node:assert/strict";
import { test } from "node:test";

import { usageLine } from "../../../src/aichats/web/static/usage.js";

const base = {
  date: "2026-03-01", resets_at: "2026-03-02T00:00:00.000Z", active_schedules: 0,
  max_active_schedules: 100, rate_limit_per_minute: 600,
};

test("without a budget, only what was used", () => {
  const line = usageLine({ ...base, blended_tokens: "1234.5", token_budget: null, remaining_tokens: null });
  assert.equal(line.over, false);
  assert.match(line.text, /^1,234\.5 tokens today$/);
  assert.match(line.title, /no daily limit/);
});

test("with a budget, used against it, and what is left", () => {
  const line = usageLine({ ...base, blended_tokens: "400", token_budget: "1000", remaining_tokens: "600" });
  assert.equal(line.over, false);
  assert.equal(line.text, "400 / 1,000 tokens today");
  assert.match(line.title, /^600 tokens left today; the budget resets /);
});

test("a budget used up says so, and when it resets", () => {
  const line = usageLine({ ...base, blended_tokens: "1012", token_budget: "1000", remaining_tokens: "0" });
  assert.equal(line.over, true);
  assert.equal(line.text, "Daily token budget used up (1,012 / 1,000)");
  assert.match(line.title, /^New messages wait until the budget resets /);
});
