// @ts-check
// Markdown to HTML text, for the agent's replies: GitHub-flavoured Markdown by marked (vendored,
// see vendor/README.md), with what a reply must never become taken out here already. Pure (no
// DOM): tests/web/js runs it in node. Its output is untrusted all the same: markdown.js passes
// it through DOMPurify before it reaches the page.
//
// - Raw HTML in the text (`<img onerror=...>`, `<script>`) is shown as the text it is, not
//   interpreted: a model that writes HTML means it as an example far more often than as markup.
// - Links keep only http, https and mailto addresses; any other (a `javascript:` one, a path
//   into this app or its API, a `#/...` route of this page) is shown as its text alone.
// - Images are shown as links to them, never loaded: a reply can not make the browser fetch a
//   tracking pixel (and the page's Content-Security-Policy would refuse other origins anyway).

import { Marked } from "./vendor/marked/marked.esm.js";

/** @param {string} text */
export function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

/**
 * ``href`` as an attribute's value (percent-encoded as marked's own renderer does), or null
 * when it can not be encoded.
 * @param {string} href
 */
function cleanUrl(href) {
  try {
    return escapeHtml(encodeURI(href.trim()).replace(/%25/g, "%"));
  } catch {
    return null;
  }
}

/**
 * Whether a link may point at ``href``: an absolute http(s) or mailto address only.
 * @param {string} href
 */
export function safeHref(href) {
  return /^(https?:\/\/|mailto:)/i.test(href.trim());
}

const marked = new Marked({
  async: false,
  gfm: true,
  breaks: false,
  renderer: {
    html({ text, block }) {
      return block ? `<p>${escapeHtml(text)}</p>\n` : escapeHtml(text);
    },
    link({ href, title, tokens }) {
      const text = this.parser.parseInline(tokens);
      const url = safeHref(href) ? cleanUrl(href) : null;
      if (url === null) return text;
      const titled = title ? ` title="${escapeHtml(title)}"` : "";
      return `<a href="${url}"${titled}>${text}</a>`;
    },
    image({ href, text }) {
      const label = `🖼 ${escapeHtml(text || href)}`;
      const url = safeHref(href) ? cleanUrl(href) : null;
      return url === null ? label : `<a href="${url}">${label}</a>`;
    },
  },
});

/**
 * The HTML of ``markdown`` (a reply's whole text so far: an unfinished one renders as far as it goes).
 * @param {string} markdown
 * @returns {string}
 */
export function toHtml(markdown) {
  return /** @type {string} */ (marked.parse(markdown));
}
