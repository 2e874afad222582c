// @ts-check
// How tool calls, tool servers and tools read on the page. Pure (no DOM): tests/web/js runs it in node.

/** @import { AvailableTool, ToolCall, ToolKind } from "../api-types" */

/**
 * ``text`` as indented JSON when it is JSON, else as it is (a model may write arguments that
 * do not parse, and a tool may answer anything).
 * @param {string | null | undefined} text
 */
export function prettyJson(text) {
  if (!text) return "";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** @type {Record<ToolCall["status"], string>} */
const STATUS_TEXT = {
  requested: "Requested",
  awaiting_approval: "Waiting for your approval",
  approved: "Approved",
  denied: "Denied",
  running: "Running…",
  completed: "Done",
  failed: "Failed",
};

/**
 * What a call's status says to a person ("Done", "Failed", "Waiting for your approval"...);
 * a completed call whose tool answered an error says "Error".
 * @param {ToolCall} call
 */
export function callStatusText(call) {
  if (call.status === "completed" && call.is_error) return "Error";
  return STATUS_TEXT[call.status] ?? call.status;
}

/**
 * "12 ms", "1.5 s", "2 min 5 s" (empty when unknown).
 * @param {number | null | undefined} ms
 */
export function durationText(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
}

/** The groups of the tool list (by ``kind``: where a tool comes from), in the order shown. */
export const TOOL_KINDS = /** @type {const} */ ([
  ["builtin", "Built in"],
  ["operator", "From the operator"],
  ["user", "Yours"],
]);

/**
 * The tools by where they come from, in ``TOOL_KINDS``' order, each group by name.
 * @param {AvailableTool[]} tools
 * @returns {{ kind: ToolKind, label: string, tools: AvailableTool[] }[]}
 */
export function groupTools(tools) {
  return TOOL_KINDS.map(([kind, label]) => ({
    kind,
    label,
    tools: tools.filter((tool) => tool.kind === kind).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
  }));
}

/**
 * The headers of a tool server form, from its rows: rows left empty are skipped; a value
 * without a name, or a name given twice (in any case), is refused with a message.
 * @param {{ name: string, value: string }[]} rows
 * @returns {{ headers: Record<string, string> } | { error: string }}
 */
export function headersOf(rows) {
  /** @type {Record<string, string>} */
  const headers = {};
  const seen = new Set();
  for (const row of rows) {
    const name = row.name.trim();
    if (!name && !row.value.trim()) continue;
    if (!name) return { error: "Each header needs a name." };
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) return { error: `“${name}” is not a header name.` };
    if (seen.has(name.toLowerCase())) return { error: `The header “${name}” is given twice.` };
    seen.add(name.toLowerCase());
    headers[name] = row.value.trim();
  }
  return { headers };
}
