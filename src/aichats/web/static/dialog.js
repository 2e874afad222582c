// @ts-check
// Modal dialogs on the page's one <dialog>: focus moves in and is trapped by the browser,
// Escape closes, and focus returns to what opened it.

import { reason } from "./api.js";
import { byId, h } from "./dom.js";

/** @import { Child } from "./dom.js" */

const dialog = () => /** @type {HTMLDialogElement} */ (byId("dialog"));

/**
 * Show a form in the dialog. ``onSubmit`` runs on submit; the dialog closes when it
 * resolves, and shows its error (staying open) when it throws.
 * @param {{
 *   title: string,
 *   body: Child,
 *   submitLabel: string,
 *   submitClass?: string,
 *   onSubmit: (form: HTMLFormElement) => Promise<void>,
 *   extraButtons?: Child[],
 * }} options
 */
export function openForm({ title, body, submitLabel, submitClass = "primary", onSubmit, extraButtons = [] }) {
  const el = dialog();
  const opener = document.activeElement;
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: submitClass }, submitLabel);
  const form = h(
    "form",
    { "aria-labelledby": "dialog-title" },
    h("h2", { id: "dialog-title" }, title),
    body,
    error,
    h(
      "div",
      { class: "dialog-actions" },
      extraButtons,
      h("button", { type: "button", onclick: () => el.close() }, "Cancel"),
      submit,
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    try {
      await onSubmit(form);
      el.close();
    } catch (failure) {
      error.textContent = reason(failure);
    } finally {
      submit.disabled = false;
    }
  });
  el.replaceChildren(form);
  el.onclose = () => {
    el.replaceChildren();
    if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
  };
  el.showModal();
  /** @type {HTMLElement | null} */
  const first = form.querySelector("[autofocus]") || form.querySelector("input, select, textarea, button");
  if (first) first.focus();
  return { form, error, close: () => el.close() };
}

export function closeDialog() {
  if (dialog().open) dialog().close();
}
