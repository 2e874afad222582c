// @ts-check
// The Tools screen (#/tools): the user's own MCP tool servers (GET/POST /tool_servers, refresh,
// DELETE), and every tool the agent can call (GET /tools), grouped by where it comes from.
// What a server answers (its tools' names and descriptions) is shown as text only.

import { del, get, post, query, reason } from "./api.js";
import { openForm } from "./dialog.js";
import { fill, h, timeEl, toast } from "./dom.js";
import { counted } from "./format.js";
import { groupTools, headersOf } from "./toolcalls.js";

/** @import { AvailableToolList, ToolServer, ToolServerList, ToolServerTool } from "../api-types" */

/**
 * The Tools screen; returns the function that closes it.
 * @param {HTMLElement} main
 * @returns {() => void}
 */
export function showTools(main) {
  const page = new ToolsPage(main);
  page.start();
  return () => page.stop();
}

/**
 * A server's tool calls need approval unless its MCP annotations say read-only and not destructive.
 * @param {ToolServerTool} tool
 */
const changesThings = (tool) => tool.destructive || !tool.read_only;

const approvalTag = () =>
  h("span", { class: "tag approval-tag", title: "It can change things: in a chat, each call waits for your approval." }, "needs approval");

class ToolsPage {
  /** @param {HTMLElement} main */
  constructor(main) {
    this.main = main;
    this.closed = false;
    /** @type {Map<string, HTMLLIElement>} */
    this.items = new Map(); // server id -> <li>
    this.servers = h("ul", { class: "server-list", id: "tool-servers", "aria-label": "Your tool servers" });
    this.serversStatus = h("p", { class: "hint", "aria-live": "polite" });
    this.tools = h("div", { id: "available-tools" });
    this.form = this.addForm();
  }

  start() {
    document.title = "Tools · aichats";
    this.main.replaceChildren(
      h(
        "section",
        { class: "view", "aria-labelledby": "view-title" },
        h(
          "header",
          { class: "view-head" },
          h("a", { class: "back-link", href: "#/" }, "← Chats"),
          h("h2", { id: "view-title" }, "Tools"),
          h("div", { class: "view-meta" }, "What the agent can call in your chats: built-in tools, the operator's, and your own MCP servers."),
        ),
        h(
          "div",
          { class: "scroller tools-page" },
          h(
            "section",
            { "aria-labelledby": "servers-title" },
            h("h3", { id: "servers-title" }, "Your tool servers"),
            this.servers,
            this.serversStatus,
          ),
          h(
            "section",
            { "aria-labelledby": "add-server-title" },
            h("h3", { id: "add-server-title" }, "Add a tool server"),
            this.form,
          ),
          h(
            "section",
            { "aria-labelledby": "tools-title" },
            h("h3", { id: "tools-title" }, "Tools available"),
            this.tools,
          ),
        ),
      ),
    );
    this.loadServers();
    this.loadTools();
  }

  stop() {
    this.closed = true;
  }

  async loadServers() {
    this.serversStatus.textContent = "Loading…";
    try {
      /** @type {ToolServer[]} */
      const servers = [];
      /** @type {string | null} */
      let after = null;
      do {
        /** @type {ToolServerList} */
        const page = await get(`tool_servers${query({ first: 100, after })}`);
        servers.push(...page.data);
        after = page.page_info.has_next_page ? page.page_info.end_cursor : null;
      } while (after);
      if (this.closed) return;
      this.items.clear();
      this.servers.replaceChildren(...servers.map((server) => this.serverItem(server)));
      this.setServersStatus();
    } catch (error) {
      if (!this.closed) this.serversStatus.textContent = reason(error);
    }
  }

  setServersStatus() {
    this.serversStatus.textContent = this.items.size
      ? ""
      : "No tool servers yet. Add an MCP server below (Streamable HTTP) and the agent can call its tools.";
  }

  async loadTools() {
    try {
      /** @type {AvailableToolList} */
      const answer = await get("tools");
      if (this.closed) return;
      fill(
        this.tools,
        groupTools(answer.data).map(({ kind, label, tools }) =>
          h(
            "section",
            { class: "tool-group", "data-kind": kind, "aria-label": label },
            h("h4", {}, label),
            tools.length
              ? h(
                "ul",
                { class: "tool-list" },
                tools.map((tool) =>
                  h(
                    "li",
                    { "data-tool": tool.name },
                    h("code", { class: "tool-name" }, tool.name),
                    tool.needs_approval ? approvalTag() : null,
                    h("span", { class: "tool-description" }, tool.description),
                  ),
                ),
              )
              : h("p", { class: "hint" }, kind === "user" ? "None yet: add a tool server above." : "None."),
          ),
        ),
      );
    } catch (error) {
      if (!this.closed) fill(this.tools, h("p", { class: "error" }, reason(error)));
    }
  }

  /**
   * @param {ToolServer} server
   * @param {string} [status] what the last test of it said
   */
  serverItem(server, status = "") {
    const li = h(
      "li",
      { class: "server", "data-server-id": server.id, "aria-label": server.name },
      h(
        "div",
        { class: "server-head" },
        h("span", { class: "server-name" }, server.name),
        h("span", { class: "server-url" }, server.url),
        server.has_headers ? h("span", { class: "tag", title: "Sent with every request; never shown again" }, "with headers") : null,
        h("span", { class: "hint" }, "tested ", timeEl(server.refreshed_at)),
      ),
      server.tools.length
        ? h(
          "ul",
          { class: "server-tools", "aria-label": `Tools of ${server.name}` },
          server.tools.map((tool) =>
            h(
              "li",
              {},
              h("code", { class: "tool-name" }, tool.name),
              changesThings(tool) ? approvalTag() : null,
              h("span", { class: "tool-description" }, tool.description),
            ),
          ),
        )
        : h("p", { class: "hint" }, "It lists no tools."),
      h("p", { class: "server-status", role: "status" }, status),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", onclick: (/** @type {MouseEvent} */ e) => this.refresh(server, /** @type {HTMLButtonElement} */ (e.currentTarget)) }, "Test again"),
        h("button", { type: "button", class: "danger", onclick: () => this.confirmRemove(server) }, "Remove"),
      ),
    );
    const old = this.items.get(server.id);
    this.items.set(server.id, li);
    if (old) old.replaceWith(li);
    return li;
  }

  /**
   * List the server's tools again.
   * @param {ToolServer} server
   * @param {HTMLButtonElement} button
   */
  async refresh(server, button) {
    button.disabled = true;
    const status = this.items.get(server.id)?.querySelector(".server-status");
    if (status) status.textContent = "Testing…";
    try {
      /** @type {ToolServer} */
      const fresh = await post(`tool_servers/${server.id}/refresh`);
      if (this.closed) return;
      this.serverItem(fresh, `It answers: ${counted(fresh.tools.length, "tool", "tools")}.`);
      this.items.get(server.id)?.querySelector("button")?.focus();
      this.loadTools();
    } catch (error) {
      button.disabled = false;
      if (status) {
        status.textContent = `The test failed: ${reason(error)}`;
        status.classList.add("error");
      }
    }
  }

  /** @param {ToolServer} server */
  confirmRemove(server) {
    openForm({
      title: "Remove this tool server?",
      body: h("p", {}, `“${server.name}” (${server.url}) and its tools will no longer be offered to the agent.`),
      submitLabel: "Remove",
      submitClass: "danger solid",
      onSubmit: async () => {
        await del(`tool_servers/${server.id}`);
        this.items.get(server.id)?.remove();
        this.items.delete(server.id);
        this.setServersStatus();
        toast(`Tool server “${server.name}” removed.`);
        this.loadTools();
      },
    });
  }

  /** The form that adds a server: name, URL, and headers as name/value rows. */
  addForm() {
    const name = h("input", { id: "server-name", name: "name", required: true, maxlength: 32, pattern: "[A-Za-z0-9_\\-]{1,32}", autocomplete: "off", spellcheck: "false", placeholder: "revenue" });
    const url = h("input", { id: "server-url", name: "url", type: "url", required: true, autocomplete: "off", spellcheck: "false", placeholder: "https://mcp.example.com/mcp" });
    const rows = h("div", { class: "header-rows" });
    const error = h("p", { class: "error", role: "alert" });
    const done = h("p", { class: "server-added", role: "status" });
    const submit = h("button", { type: "submit", class: "primary" }, "Add server");
    // Each row is named by its place ("Header 2 name"), renumbered as rows come and go.
    const renumber = () => {
      [...rows.children].forEach((row, index) => {
        const [name, value, remove] = row.children;
        name.setAttribute("aria-label", `Header ${index + 1} name`);
        value.setAttribute("aria-label", `Header ${index + 1} value`);
        remove.setAttribute("aria-label", `Remove header ${index + 1}`);
      });
    };
    const addRow = () => {
      const row = h(
        "div",
        { class: "header-row" },
        h("input", { class: "header-name", placeholder: "Authorization", autocomplete: "off", spellcheck: "false" }),
        h("input", { class: "header-value", placeholder: "Bearer …", autocomplete: "off", spellcheck: "false", type: "password" }),
        h("button", {
          type: "button",
          class: "link-button",
          onclick: () => {
            row.remove();
            renumber();
            addHeader.focus();
          },
        }, "×"),
      );
      rows.append(row);
      renumber();
      /** @type {HTMLInputElement | null} */ (row.querySelector("input"))?.focus();
    };
    const addHeader = h("button", { type: "button", class: "link-button", onclick: addRow }, "+ Add a header");
    const form = h(
      "form",
      { class: "add-server", novalidate: true, "aria-labelledby": "add-server-title" },
      h("label", { for: "server-name" }, "Name"),
      name,
      h("p", { class: "hint" }, "The agent sees its tools as name__tool."),
      h("label", { for: "server-url" }, "URL"),
      url,
      h("p", { class: "hint" }, "An MCP server over Streamable HTTP."),
      h("div", { class: "tool-label" }, "Headers (optional)"),
      h("p", { class: "hint" }, "Sent with every request to the server (an Authorization header, say); stored encrypted and never shown again."),
      rows,
      addHeader,
      error,
      done,
      h("div", { class: "dialog-actions" }, submit),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      done.textContent = "";
      if (!name.value.trim() || !url.value.trim()) {
        error.textContent = "Give the server a name and a URL.";
        (name.value.trim() ? url : name).focus();
        return;
      }
      const headers = headersOf(
        [...rows.querySelectorAll(".header-row")].map((row) => ({
          name: /** @type {HTMLInputElement} */ (row.querySelector(".header-name")).value,
          value: /** @type {HTMLInputElement} */ (row.querySelector(".header-value")).value,
        })),
      );
      if ("error" in headers) {
        error.textContent = headers.error;
        return;
      }
      submit.disabled = true;
      submit.textContent = "Connecting…";
      try {
        const body = { name: name.value.trim(), url: url.value.trim(), ...(Object.keys(headers.headers).length ? { headers: headers.headers } : {}) };
        /** @type {ToolServer} */
        const server = await post("tool_servers", body);
        if (this.closed) return;
        const tools = server.tools.map((tool) => tool.name).join(", ");
        this.servers.prepend(this.serverItem(server));
        this.setServersStatus();
        done.textContent = `Added “${server.name}”: ${counted(server.tools.length, "tool", "tools")}${tools ? ` (${tools})` : ""}.`;
        name.value = "";
        url.value = "";
        rows.replaceChildren();
        this.loadTools();
      } catch (failure) {
        error.textContent = reason(failure);
      } finally {
        submit.disabled = false;
        submit.textContent = "Add server";
      }
    });
    return form;
  }
}
