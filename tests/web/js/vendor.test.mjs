// The vendored libraries (src/aichats/web/static/vendor) are the npm packages' own files, at
// the versions pinned in package.json and package-lock.json: they can not drift or be edited.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

const root = new URL("../../../", import.meta.url);
const vendor = new URL("src/aichats/web/static/vendor/", root);
const json = (/** @type {URL} */ url) => JSON.parse(readFileSync(url, "utf8"));

// vendored file -> its package and the file in that package
const FILES = {
  "marked/marked.esm.js": ["marked", "lib/marked.esm.js"],
  "marked/marked.esm.d.ts": ["marked", "lib/marked.d.ts"],
  "marked/LICENSE": ["marked", "LICENSE"],
  "dompurify/purify.es.mjs": ["dompurify", "dist/purify.es.mjs"],
  "dompurify/purify.es.d.mts": ["dompurify", "dist/purify.es.d.mts"],
  "dompurify/LICENSE": ["dompurify", "LICENSE"],
  "dompurify/LICENSE-MPL": ["dompurify", "LICENSE-MPL"],
};

const pinned = json(new URL("package.json", root)).dependencies;
const locked = json(new URL("package-lock.json", root)).packages;

test("each library is pinned to one exact version, and installed at it", () => {
  for (const name of ["marked", "dompurify"]) {
    assert.match(pinned[name], /^\d+\.\d+\.\d+$/, `${name} is pinned exactly`);
    assert.equal(locked[`node_modules/${name}`].version, pinned[name], `package-lock.json has ${name} ${pinned[name]}`);
    assert.equal(json(new URL(`node_modules/${name}/package.json`, root)).version, pinned[name], `run npm ci: node_modules has another ${name}`);
  }
});

test("the vendored files are byte for byte the packages' files", () => {
  for (const [file, [name, path]] of Object.entries(FILES)) {
    const ours = readFileSync(new URL(file, vendor));
    const theirs = readFileSync(new URL(`node_modules/${name}/${path}`, root));
    assert.ok(ours.equals(theirs), `vendor/${file} differs from ${name}'s ${path}: see vendor/README.md to update`);
  }
});

test("the vendored scripts and the README name the pinned versions", () => {
  const readme = readFileSync(new URL("README.md", vendor), "utf8");
  assert.match(readme, new RegExp(`\\| \\[marked\\]\\([^)]+\\) \\| ${pinned.marked} \\|`));
  assert.match(readme, new RegExp(`\\| \\[DOMPurify\\]\\([^)]+\\) \\| ${pinned.dompurify} \\|`));
  assert.match(readFileSync(new URL("marked/marked.esm.js", vendor), "utf8"), new RegExp(`marked v${pinned.marked} `));
  assert.match(readFileSync(new URL("dompurify/purify.es.mjs", vendor), "utf8"), new RegExp(`DOMPurify ${pinned.dompurify} `));
});
