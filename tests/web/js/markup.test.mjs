// Markdown to HTML text (markup.js), before DOMPurify: raw HTML, unsafe links and images never
// become markup. (DOMPurify's own pass runs in the browser: tests/web/test_markdown.py.)
import assert from "node:assert/strict";
import { test } from "node:test";

import { escapeHtml, safeHref, toHtml } from "../../../src/aichats/web/static/markup.js";

test("Markdown renders: headings, lists, emphasis, code blocks with their language, tables", () => {
  const html = toHtml("# Weekly report\n\n- **up** 4%\n- *down* 2%\n\n1. one\n2. two\n\n```python\nprint(1 < 2)\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
  assert.match(html, /<h1>Weekly report<\/h1>/);
  assert.match(html, /<ul>\n<li><strong>up<\/strong> 4%<\/li>\n<li><em>down<\/em> 2%<\/li>\n<\/ul>/);
  assert.match(html, /<ol>\n<li>one<\/li>/);
  assert.match(html, /<pre><code class="language-python">print\(1 &lt; 2\)\n<\/code><\/pre>/);
  assert.match(html, /<table>/);
});

test("raw HTML is shown as the text it is, inline and as a block", () => {
  const hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><iframe src="https://e.com"></iframe><style>body{display:none}</style>';
  for (const text of [`Look: ${hostile}`, hostile, `<div onclick="x()">\nblock\n</div>`]) {
    const html = toHtml(text);
    assert.doesNotMatch(html, /<(img|script|iframe|style|div)\b/i, html);
    assert.match(html, /&lt;/);
  }
  assert.equal(toHtml("a <b>b</b>"), "<p>a &lt;b&gt;b&lt;/b&gt;</p>\n");
});

test("only http(s) and mailto links are links; anything else is its text", () => {
  assert.equal(toHtml("[site](https://example.com/a?b=1&c=2)"), '<p><a href="https://example.com/a?b=1&amp;c=2">site</a></p>\n');
  assert.equal(toHtml('[t](http://e.com "Its title")'), '<p><a href="http://e.com" title="Its title">t</a></p>\n');
  assert.equal(toHtml("[mail](mailto:a@example.com)"), '<p><a href="mailto:a@example.com">mail</a></p>\n');
  for (const href of ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<script>x</script>", "vbscript:x", "/api/v1/ai_chats", "#/tools", "//evil.example"]) {
    const html = toHtml(`[click](${href})`);
    assert.doesNotMatch(html, /<a\b/, html);
    assert.match(html, /click/);
  }
  assert.doesNotMatch(toHtml("<javascript:alert(1)>"), /<a\b/);
  assert.match(toHtml("see https://example.com"), /<a href="https:\/\/example.com">https:\/\/example.com<\/a>/);
  assert.doesNotMatch(toHtml('[x](https://e.com/"onmouseover="alert(1))'), /" ?onmouseover="/);
});

test("images are links to them, never loaded", () => {
  assert.equal(toHtml("![a chart](https://example.com/chart.png)"), '<p><a href="https://example.com/chart.png">🖼 a chart</a></p>\n');
  assert.equal(toHtml("![pixel](javascript:alert(1))"), "<p>🖼 pixel</p>\n");
  assert.doesNotMatch(toHtml('![x](https://e.com/x.png "t") <img src="https://e.com/y.png">'), /<img\b/);
});

test("an unfinished reply renders as far as it goes", () => {
  assert.equal(toHtml("**bol"), "<p>**bol</p>\n");
  assert.match(toHtml("```js\nconst a"), /<pre><code class="language-js">const a\n<\/code><\/pre>/);
});

test("escaping and link checks", () => {
  assert.equal(escapeHtml(`<a href="x">'&'</a>`), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
  assert.equal(safeHref(" https://e.com"), true);
  assert.equal(safeHref("ftp://e.com"), false);
});
