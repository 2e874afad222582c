// @ts-check
// The schedule editor's presets, and which one a cron expression is. Pure (no DOM):
// tests/web/js runs it in node.

/**
 * @typedef {object} Preset
 * @property {string} id
 * @property {string} label
 * @property {(minute: number | string, hour: number | string) => string} [cron] the expression at that time
 * @property {boolean} [noTime] the time is not asked (hourly)
 * @property {boolean} [custom] the expression is typed in
 */

export const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
/** @type {Preset[]} */
export const PRESETS = [
  { id: "daily", label: "Every day", cron: (m, hr) => `${m} ${hr} * * *` },
  { id: "weekdays", label: "Weekdays (Monday to Friday)", cron: (m, hr) => `${m} ${hr} * * 1-5` },
  ...DAYS.map((day, n) => ({ id: `weekly-${n}`, label: `Every ${day}`, cron: (/** @type {number | string} */ m, /** @type {number | string} */ hr) => `${m} ${hr} * * ${n}` })),
  { id: "monthly", label: "First day of every month", cron: (m, hr) => `${m} ${hr} 1 * *` },
  { id: "hourly", label: "Every hour, on the hour", cron: () => "0 * * * *", noTime: true },
  { id: "custom", label: "Custom (cron)", custom: true },
];

/**
 * The preset (and time, "HH:MM") a cron expression matches, or "custom".
 * @param {string | null | undefined} cron
 * @returns {{preset: string, time: string}}
 */
export function recognise(cron) {
  const fields = (cron || "").trim().split(/\s+/);
  if (fields.length === 5 && /^\d+$/.test(fields[0]) && /^\d+$/.test(fields[1])) {
    const time = `${fields[1].padStart(2, "0")}:${fields[0].padStart(2, "0")}`;
    for (const preset of PRESETS) {
      if (preset.cron && !preset.noTime && preset.cron(fields[0], fields[1]) === fields.join(" ")) return { preset: preset.id, time };
    }
  }
  if (cron === "0 * * * *") return { preset: "hourly", time: "09:00" };
  return { preset: "custom", time: "09:00" };
}

/**
 * The cron expression of preset ``id`` at ``time`` ("HH:MM", default 09:00), or ``custom``
 * (trimmed) for the custom preset.
 * @param {string} id
 * @param {string} time
 * @param {string} custom
 */
export function expressionFor(id, time, custom) {
  const chosen = PRESETS.find((p) => p.id === id);
  if (!chosen || !chosen.cron) return custom.trim();
  const [hour, minute] = (time || "09:00").split(":").map(Number);
  return chosen.cron(minute, hour);
}
