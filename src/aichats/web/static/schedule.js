// @ts-check
// The schedule editor of a chat: presets or a custom cron, the time zone (the browser's
// by default), the prompt, and, before saving, the server's own description and next run
// times (POST /schedule_preview). Also: enable/disable, run now, remove, run history.

import { ApiError, del, get, post, put, reason } from "./api.js";
import { openForm } from "./dialog.js";
import { debounce, fill, h, toast } from "./dom.js";
import { when } from "./format.js";
import { PRESETS, expressionFor, recognise } from "./presets.js";
import { emit } from "./state.js";

/** @import { AiChat, RunList, Schedule, ScheduleInput, SchedulePreview } from "../api-types" */

/** @type {Record<string, string>} */
const TRIGGERS = { schedule: "Scheduled", manual: "Run now", message: "Message", retry: "Retry" };

function browserZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

/** @param {string | null | undefined} selected */
function zones(selected) {
  /** @type {string[]} */
  let names = [];
  try {
    names = Intl.supportedValuesOf("timeZone");
  } catch {
    names = [];
  }
  for (const name of ["UTC", browserZone(), selected]) if (name && !names.includes(name)) names.push(name);
  return names.sort();
}

/**
 * The schedule editor of ``chat`` (nothing before the chat is loaded).
 * @param {AiChat | null} chat
 */
export async function openSchedule(chat) {
  if (!chat) return;
  const chatId = chat.id;
  /** @type {Schedule | null} */
  let existing = null;
  try {
    existing = await get(`ai_chats/${chatId}/schedule`);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) {
      toast(reason(error));
      return;
    }
  }
  const start = recognise(existing && existing.cron);
  if (!existing) start.preset = "weekly-1"; // "Every Monday at 09:00" is the common first schedule

  const preset = h("select", { id: "schedule-preset" }, PRESETS.map((p) => h("option", { value: p.id }, p.label)));
  preset.value = start.preset;
  const time = h("input", { id: "schedule-time", type: "time", value: start.time, required: true });
  const cron = h("input", { id: "schedule-cron", value: (existing && existing.cron) || "0 9 * * 1", spellcheck: "false", placeholder: "minute hour day month weekday" });
  const zone = h("select", { id: "schedule-timezone" }, zones(existing && existing.timezone).map((z) => h("option", { value: z }, z)));
  zone.value = (existing && existing.timezone) || browserZone();
  const prompt = h("textarea", { id: "schedule-prompt", rows: 3, required: true, placeholder: "e.g. Summarise last week's revenue" }, (existing && existing.prompt) || "");
  const active = h("input", { id: "schedule-active", type: "checkbox", checked: existing ? existing.active : true });
  // Nobody is there to approve a scheduled run's tools that change things: only if allowed here.
  const allowChanges = h("input", { id: "schedule-allow-changes", type: "checkbox", checked: existing ? existing.allow_changes : false });
  const preview = h("div", { class: "preview", "aria-live": "polite", id: "schedule-preview" });
  const timeRow = h("div", {}, h("label", { for: "schedule-time" }, "At (local time)"), time);
  const cronRow = h("div", {}, h("label", { for: "schedule-cron" }, "Cron expression"), cron);
  const history = h("ul", { class: "runs", id: "schedule-runs" });
  const notCron = existing && !existing.cron
    ? h("p", { class: "hint" }, `This schedule was set through the API (${existing.description}); saving here replaces it with the schedule below.`)
    : null;

  function expression() {
    return expressionFor(preset.value, time.value, cron.value);
  }

  /** @returns {ScheduleInput & { cron: string, active: boolean }} */
  function body() {
    return {
      prompt: prompt.value.trim(),
      timezone: zone.value,
      cron: expression(),
      active: active.checked,
      // Kept as they are: a schedule limited to some tools (through the API) stays limited.
      tools: existing ? existing.tools : null,
      allow_changes: allowChanges.checked,
    };
  }

  function syncFields() {
    const chosen = PRESETS.find((p) => p.id === preset.value);
    cronRow.hidden = !chosen?.custom;
    timeRow.hidden = Boolean(chosen?.custom || chosen?.noTime);
    if (!chosen?.custom) cron.value = expression();
  }

  let asked = 0;
  const refreshPreview = debounce(async () => {
    const ticket = ++asked;
    const { timezone, cron: expr, active: on } = body();
    try {
      /** @type {SchedulePreview} */
      const answer = await post("schedule_preview", { timezone, cron: expr, active: true });
      if (ticket !== asked) return;
      fill(preview, 
        h("strong", {}, answer.description),
        on ? null : h("p", { class: "hint" }, "Disabled: it will not run until enabled."),
        h("div", { class: "hint" }, "Next runs:"),
        h("ol", {}, answer.next_run_times.map((t) => h("li", {}, when(t, timezone)))),
      );
    } catch (error) {
      if (ticket === asked) fill(preview, h("p", { class: "error" }, reason(error)));
    }
  }, 200);

  for (const input of [preset, time, cron, zone, active]) {
    input.addEventListener("input", () => {
      syncFields();
      refreshPreview();
    });
  }

  async function loadRuns() {
    try {
      /** @type {RunList} */
      const runs = await get(`ai_chats/${chatId}/runs?first=10`);
      history.replaceChildren(
        ...(runs.data.length
          ? runs.data.map((run) =>
            h(
              "li",
              {},
              h("span", {}, when(run.scheduled_for || run.created_at)),
              h("span", {}, TRIGGERS[run.trigger] || run.trigger),
              h("span", { class: `status-${run.status}` }, run.status),
              run.error ? h("span", { class: "status-failed" }, run.error) : null,
            ))
          : [h("li", { class: "hint" }, "No runs yet.")]),
      );
    } catch (error) {
      history.replaceChildren(h("li", { class: "error" }, reason(error)));
    }
  }

  /** @type {HTMLButtonElement[]} */
  const extraButtons = [];
  if (existing) {
    extraButtons.push(
      h("button", {
        type: "button",
        onclick: async () => {
          try {
            await post(`ai_chats/${chatId}/schedule/run`);
            toast("Queued: the prompt runs now.");
            loadRuns();
          } catch (error) {
            toast(reason(error));
          }
        },
      }, "Run now"),
      h("button", {
        type: "button",
        class: "danger",
        onclick: async () => {
          try {
            await del(`ai_chats/${chatId}/schedule`);
            emit("schedule", { chatId, schedule: null });
            toast("Schedule removed.");
            dialog.close();
          } catch (error) {
            toast(reason(error));
          }
        },
      }, "Remove schedule"),
    );
  }

  const dialog = openForm({
    title: existing ? "Schedule" : "New schedule",
    submitLabel: "Save schedule",
    extraButtons,
    body: [
      h("p", { class: "hint" }, "The prompt is sent to this chat on its own; the reply lands here and notifies you unless the chat is muted."),
      notCron,
      h("div", { class: "grid-2" }, h("div", {}, h("label", { for: "schedule-preset" }, "Repeat"), preset), timeRow),
      cronRow,
      h("label", { for: "schedule-timezone" }, "Time zone"),
      zone,
      h("label", { for: "schedule-prompt" }, "Prompt"),
      prompt,
      h("label", { class: "check", for: "schedule-active" }, active, "Enabled"),
      h("label", { class: "check", for: "schedule-allow-changes" }, allowChanges, "Its runs may use tools that change things (nobody is there to approve them)"),
      preview,
      existing ? [h("h3", {}, "Run history"), history] : null,
    ],
    onSubmit: async () => {
      /** @type {Schedule} */
      const saved = await put(`ai_chats/${chatId}/schedule`, body());
      emit("schedule", { chatId, schedule: saved });
      toast(`Saved: ${saved.description}`);
    },
  });
  syncFields();
  refreshPreview();
  if (existing) loadRuns();
}
