// @ts-check
// The message composer: Enter sends, Shift+Enter starts a new line; files are uploaded
// as soon as they are chosen (POST /files) and sent as the message's attachments. While the
// agent writes a reply, a Stop button stands beside Send (``onStop``, ``setStoppable``).

import { post, reason } from "./api.js";
import { h } from "./dom.js";

/** @import { Attachment, File as UploadedFile } from "../api-types" */

let counter = 0;

/**
 * A composer; ``onSend({text, attachments})`` and ``onStop()`` return promises (their errors are shown).
 * @param {{
 *   placeholder: string,
 *   onSend: (message: { text: string, attachments: Attachment[] }) => Promise<void>,
 *   onStop?: () => Promise<void>,
 *   label?: string,
 * }} options
 */
export function composer({ placeholder, onSend, onStop, label = "Message" }) {
  counter += 1;
  const ids = { text: `composer-text-${counter}`, file: `composer-file-${counter}` };
  /** @type {{ id: string, filename: string }[]} */
  const attached = [];
  let uploading = 0;
  const chips = h("ul", { class: "attachments", "aria-label": "Attachments" });
  const error = h("p", { class: "error", role: "alert" });
  const text = h("textarea", { id: ids.text, rows: 2, placeholder, "aria-label": label });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const stop = h("button", {
    type: "button",
    class: "stop-button",
    hidden: true,
    title: "Stop the reply being written",
    onclick: async () => {
      if (!onStop) return;
      stop.disabled = true;
      error.textContent = "";
      try {
        await onStop();
      } catch (failure) {
        error.textContent = reason(failure);
      } finally {
        stop.disabled = false;
      }
    },
  }, h("span", { "aria-hidden": "true" }, "■"), "Stop");
  const file = h("input", { id: ids.file, type: "file", multiple: true, class: "file-input" });
  const form = h(
    "form",
    { class: "composer" },
    chips,
    h(
      "div",
      { class: "composer-row" },
      text,
      file,
      h("label", { for: ids.file, class: "button", title: "Attach files" }, "Attach"),
      stop,
      send,
    ),
    error,
    h("p", { class: "hint" }, "Enter sends · Shift+Enter new line"),
  );

  function renderChips() {
    chips.replaceChildren(
      ...attached.map((item) =>
        h(
          "li",
          {},
          item.filename,
          h("button", {
            type: "button",
            class: "link-button",
            "aria-label": `Remove ${item.filename}`,
            onclick: () => {
              attached.splice(attached.indexOf(item), 1);
              renderChips();
            },
          }, "×"),
        ),
      ),
    );
    send.disabled = uploading > 0;
  }

  file.addEventListener("change", async () => {
    const files = [...(file.files || [])];
    file.value = "";
    for (const chosen of files) {
      uploading += 1;
      renderChips();
      try {
        const body = new FormData();
        body.append("file", chosen, chosen.name);
        /** @type {UploadedFile} */
        const uploaded = await post("files", body);
        attached.push({ id: uploaded.id, filename: uploaded.filename });
        error.textContent = "";
      } catch (failure) {
        error.textContent = `${chosen.name}: ${reason(failure)}`;
      } finally {
        uploading -= 1;
        renderChips();
      }
    }
  });

  async function submit() {
    const message = text.value.trim();
    if (!message || uploading) return;
    send.disabled = true;
    error.textContent = "";
    try {
      await onSend({ text: message, attachments: attached.map((item) => ({ id: item.id })) });
      text.value = "";
      attached.length = 0;
      renderChips();
    } catch (failure) {
      error.textContent = reason(failure);
    } finally {
      send.disabled = uploading > 0;
      text.focus();
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  text.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  /**
   * Show Stop (a reply is being written) or not; the focus on it moves to the text box when it goes.
   * @param {boolean} stoppable
   */
  function setStoppable(stoppable) {
    if (stop.hidden === !stoppable) return;
    const hadFocus = document.activeElement === stop;
    stop.hidden = !stoppable;
    form.classList.toggle("stoppable", stoppable);
    if (hadFocus && !stoppable) text.focus();
  }

  return { form, focus: () => text.focus(), setStoppable };
}
