// @ts-check
// A reply's text on the page, as Markdown: markup.js makes the HTML, DOMPurify (vendored, see
// vendor/README.md) keeps only the few elements and attributes that Markdown makes, and the
// nodes it returns are finished here (links open in a new tab without an opener or referrer,
// code blocks get a Copy button). This is the page's one way from text to markup: every other
// text (the user's messages, titles, tool calls and their results) goes in as text nodes.

import DOMPurify from "./vendor/dompurify/purify.es.mjs";
import { h } from "./dom.js";
import { safeHref, toHtml } from "./markup.js";

// What Markdown makes, and nothing else: no <img>, <style>, <script>, <iframe>, <form>, no
// event handler, id, style or data attribute.
const ALLOWED_TAGS = [
  "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "code", "em", "strong", "del",
  "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "input",
];
const ALLOWED_ATTR = ["href", "title", "align", "start", "type", "checked", "disabled", "class"];
const CODE_LANGUAGE = /^language-([\w+#.-]{1,40})$/;
// DOMPurify's own rule for attribute values, with http(s) and mailto as the only schemes (it
// applies it to every attribute: values without a scheme, such as "checkbox", must pass).
const ALLOWED_URI = /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i;

// A DOMPurify of its own: its settings and hooks can not leak into any other use.
const purify = DOMPurify(window);

/**
 * Sanitised nodes of ``html``: only Markdown's elements and attributes, http(s) and mailto links.
 * @param {string} html
 * @returns {DocumentFragment}
 */
export function sanitize(html) {
  const fragment = purify.sanitize(html, {
    ALLOWED_TAGS,
    ALLOWED_ATTR,
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    ALLOWED_URI_REGEXP: ALLOWED_URI,
    RETURN_DOM_FRAGMENT: true,
  });
  for (const el of fragment.querySelectorAll("[class]")) {
    // Only a code block's language stays (`language-js`): no reply may borrow the app's own classes.
    const language = el.tagName === "CODE" ? CODE_LANGUAGE.exec(el.getAttribute("class") || "") : null;
    if (language) el.setAttribute("class", `language-${language[1]}`);
    else el.removeAttribute("class");
  }
  for (const input of fragment.querySelectorAll("input")) {
    // A task list's box, shown, never a field.
    if (input.getAttribute("type") === "checkbox") input.setAttribute("disabled", "");
    else input.remove();
  }
  for (const link of fragment.querySelectorAll("a")) {
    // Absolute http(s) and mailto addresses only (markup.js made no other: this is the second lock).
    if (!safeHref(link.getAttribute("href") || "")) link.removeAttribute("href");
    if (!link.hasAttribute("href")) continue;
    link.setAttribute("target", "_blank");
    link.setAttribute("rel", "noopener noreferrer");
  }
  return fragment;
}

/**
 * Show ``markdown`` in ``el`` (its children replaced): rendered, sanitised, with a Copy button
 * on each code block.
 * @param {HTMLElement} el
 * @param {string} markdown
 */
export function renderMarkdown(el, markdown) {
  const fragment = sanitize(toHtml(markdown));
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const language = code ? CODE_LANGUAGE.exec(code.getAttribute("class") || "") : null;
    const block = h("div", { class: "code-block" });
    pre.replaceWith(block);
    block.append(
      h(
        "div",
        { class: "code-head" },
        h("span", { class: "code-language" }, language ? language[1] : ""),
        copyButton(() => (code || pre).textContent || ""),
      ),
      pre,
    );
  }
  el.replaceChildren(fragment);
}

/**
 * A "Copy" button that copies ``text()`` and says whether it worked.
 * @param {() => string} text
 */
export function copyButton(text) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const button = h("button", {
    type: "button",
    class: "copy-button",
    "aria-label": "Copy code",
    onclick: async () => {
      const copied = await copyText(text());
      button.textContent = copied ? "Copied" : "Copy failed";
      clearTimeout(timer);
      timer = setTimeout(() => { button.textContent = "Copy"; }, 2000);
      button.focus();
    },
  }, "Copy");
  return button;
}

/**
 * Put ``text`` on the clipboard: the Clipboard API where the page may use it (a secure
 * context that the browser lets write), else the older copy command on a hidden text area.
 * @param {string} text
 * @returns {Promise<boolean>} whether it was copied
 */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Refused (no permission, or the document is not focused): try the older way.
    }
  }
  const area = h("textarea", { class: "copy-buffer", readonly: true, "aria-hidden": "true", tabindex: "-1" });
  area.value = text;
  // Inside the open modal dialog, if any: the rest of the page is inert while it is open.
  const host = document.querySelector("dialog[open]") || document.body;
  host.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}
