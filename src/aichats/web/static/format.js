// @ts-check
// Times, counts and numbers as the page shows them. Pure (no DOM): tests/web/js runs it in node.

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
/** @type {[number, Intl.RelativeTimeFormatUnit][]} */
const STEPS = [[60, "second"], [60, "minute"], [24, "hour"], [7, "day"], [4.35, "week"], [12, "month"], [Infinity, "year"]];

/**
 * "now" (under a minute), "5 minutes ago", "yesterday"... for an ISO instant.
 * @param {string | null | undefined} iso
 * @param {number} [now] milliseconds since the epoch (default: this instant)
 */
export function ago(iso, now = Date.now()) {
  if (!iso) return "";
  let amount = (new Date(iso).getTime() - now) / 1000;
  // Seconds would say "1 second ago" over "now" for two messages a moment apart, and go
  // stale between refreshes: anything within a minute is "now".
  if (Math.abs(amount) < 60) return relative.format(0, "second");
  for (const [size, unit] of STEPS) {
    if (Math.abs(amount) < size) return relative.format(Math.round(amount), unit);
    amount /= size;
  }
  return "";
}

/**
 * A local date and time, in the browser's zone or in ``timeZone``.
 * @param {string | null | undefined} iso
 * @param {string} [timeZone]
 */
export function when(iso, timeZone) {
  if (!iso) return "";
  return new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short", timeZone }).format(new Date(iso));
}

const plurals = new Intl.PluralRules("en");
/**
 * "1 message", "2 messages", "1.5 tokens": ``count`` (a number or a decimal string) with its noun.
 * @param {number | string} count
 * @param {string} one
 * @param {string} many
 */
export function counted(count, one, many) {
  return `${formatNumber(count)} ${plurals.select(Number(count)) === "one" ? one : many}`;
}

const numbers = new Intl.NumberFormat();
/** @param {number | string} value */
export function formatNumber(value) {
  return numbers.format(Number(value));
}
