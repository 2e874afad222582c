// Modal dialogs on the page's one <dialog>: focus moves in and is trapped by the browser,
// Escape closes, and focus returns to what opened it.

import { h } from "./dom.js";

const dialog = () => document.getElementById("dialog");

/**
 * Show a form in the dialog. ``onSubmit`` runs on submit; the dialog closes when it
 * resolves, and shows its error (staying open) when it throws.
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
      error.textContent = failure.message;
    } finally {
      submit.disabled = false;
    }
  });
  el.replaceChildren(form);
  el.onclose = () => {
    el.replaceChildren();
    if (opener && opener.isConnected) opener.focus();
  };
  el.showModal();
  const first = form.querySelector("[autofocus]") || form.querySelector("input, select, textarea, button");
  if (first) first.focus();
  return { form, error, close: () => el.close() };
}

export function closeDialog() {
  if (dialog().open) dialog().close();
}
