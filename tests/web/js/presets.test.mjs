// The schedule editor's presets: which one a saved cron expression is, and back.
import assert from "node:assert/strict";
import { test } from "node:test";

import { PRESETS, expressionFor, recognise } from "../../../src/aichats/web/static/presets.js";

test("each preset is recognised from its own expression", () => {
  for (const preset of PRESETS) {
    if (preset.custom) continue;
    const time = preset.noTime ? "09:00" : "07:05";
    assert.deepEqual(recognise(expressionFor(preset.id, time, "")), { preset: preset.id, time }, preset.id);
  }
});

test("common expressions", () => {
  assert.deepEqual(recognise("30 9 * * 1"), { preset: "weekly-1", time: "09:30" });
  assert.deepEqual(recognise("0 18 * * 1-5"), { preset: "weekdays", time: "18:00" });
  assert.deepEqual(recognise("  5 0 1 * *  "), { preset: "monthly", time: "00:05" });
  assert.deepEqual(recognise("0 9 * * *"), { preset: "daily", time: "09:00" });
  assert.deepEqual(recognise("0 * * * *"), { preset: "hourly", time: "09:00" });
});

test("anything else is custom", () => {
  for (const cron of ["*/5 * * * *", "0 9 * * 1,3", "0 9 15 * *", "0 9 * * 7", "0 9", "", null, undefined]) {
    assert.deepEqual(recognise(cron), { preset: "custom", time: "09:00" }, String(cron));
  }
});

test("expressions of presets, and the custom one as typed", () => {
  assert.equal(expressionFor("weekly-0", "08:15", ""), "15 8 * * 0");
  assert.equal(expressionFor("daily", "", ""), "0 9 * * *"); // no time yet: 09:00
  assert.equal(expressionFor("hourly", "13:45", ""), "0 * * * *");
  assert.equal(expressionFor("custom", "13:45", "  */10 * * * * "), "*/10 * * * *");
});
