// @ts-check
// A conversation: its messages, the agent's reply streaming in (server-sent events) as
// Markdown, its tool calls (with their approvals), Stop and Regenerate, the composer, usage,
// and the chat's actions (rename, mute, schedule, delete).

import { API, ApiError, del, get, patch, post, reason } from "./api.js";
import { openCalls, toolCallList } from "./calls.js";
import { composer } from "./composer.js";
import { openForm } from "./dialog.js";
import { fill, h, timeEl, toast } from "./dom.js";
import { counted, formatNumber } from "./format.js";
import { renderMarkdown } from "./markdown.js";
import {
  activeReplies, applyDelta, isActive, messageClass, supersedes, upsertToolCall, withKnownCalls, writeAgain,
} from "./messages.js";
import { openSchedule } from "./schedule.js";
import { emit, on } from "./state.js";
import { throttle } from "./timing.js";

/**
 * @import { AiChat, AiChatList, Attachment, Message, MessageDelta, MessageList, PageInfo, Schedule, ToolCall, ToolCallEvent } from "../api-types"
 */

const PAGE_SIZE = 50;
// What a person should know about replies from the built-in local model.
const DEMO_NOTE =
  "This reply comes from the built-in demo model, a small local model (135M parameters): quick, offline, and often wrong. " +
  "An operator switches every agent to a real model with one setting: AICHATS_MODEL=openai:<model> " +
  "(OpenAI, Ollama, vLLM, llama.cpp's server) or AICHATS_MODEL=anthropic:<model>.";
const EVENTS = [
  "message.created", "message.retried", "message.delta", "message.completed", "message.failed", "message.waiting",
  "message.cancelled", "tool_call.started", "tool_call.completed", "tool_call.approval_required", "chat.updated",
];
// A streaming reply is drawn again (Markdown parsed and sanitised) at most this often.
const RENDER_EVERY_MS = 80;

/**
 * The "new chat" screen: the first message creates the chat.
 * @param {HTMLElement} main
 * @returns {() => void} the function that closes it
 */
export function showNewChat(main) {
  const agent = h(
    "select",
    { id: "agent", "aria-label": "Agent" },
    h("option", { value: "support" }, "Support agent"),
    h("option", { value: "general" }, "General agent"),
  );
  const box = composer({
    placeholder: "Ask anything…",
    label: "First message",
    onSend: async ({ text, attachments }) => {
      /** @type {AiChat} */
      const chat = await post("ai_chats", { message_text: text, message_attachments: attachments, agent_identifier: agent.value });
      emit("chat", chat);
      location.hash = `#/chats/${chat.id}`;
    },
  });
  main.replaceChildren(
    h(
      "section",
      { class: "view", "aria-labelledby": "view-title" },
      h(
        "header",
        { class: "view-head" },
        h("a", { class: "back-link", href: "#/" }, "← Chats"),
        h("h2", { id: "view-title" }, "New chat"),
        h("div", { class: "view-meta" }, h("label", { for: "agent", class: "inline" }, "Agent"), agent),
      ),
      h("div", { class: "scroller" }, h("p", { class: "welcome" }, "Start a conversation. The agent's reply streams in as it is written; add a schedule afterwards to have it run on its own.")),
      box.form,
    ),
  );
  box.focus();
  return () => {};
}

/**
 * The conversation screen of one chat; returns the function that closes it.
 * @param {HTMLElement} main
 * @param {string} chatId
 * @returns {() => void}
 */
export function showChat(main, chatId) {
  const view = new Conversation(main, chatId);
  view.start();
  return () => view.stop();
}

class Conversation {
  /**
   * @param {HTMLElement} main
   * @param {string} chatId
   */
  constructor(main, chatId) {
    this.main = main;
    this.chatId = chatId;
    /** @type {AiChat | null} */
    this.chat = null;
    /** @type {Map<string, Message>} */
    this.messages = new Map(); // id -> message
    /** @type {Map<string, HTMLLIElement>} */
    this.items = new Map(); // id -> <li>
    /** @type {Map<string, ReturnType<typeof throttle>>} */
    this.bodyRenders = new Map(); // id -> the throttled redraw of a streaming reply's text
    /** @type {[string, any][]} */
    this.backlog = []; // events that arrived before the messages were loaded
    this.loaded = false;
    /** @type {string | null} */
    this.olderCursor = null;
    this.closed = false;
    /** @type {Schedule | null} */
    this.schedule = null;
    /** @type {string | undefined} */
    this.demoNoteId = undefined;
    // The screen's elements (built here, filled in by start()).
    this.title = h("h2", { id: "view-title" }, "…");
    this.meta = h("div", { class: "view-meta" });
    this.muteButton = h("button", { type: "button", "aria-pressed": "false", onclick: () => this.toggleMute() }, "Mute");
    this.list = h("ol", { class: "messages", "aria-label": "Messages" });
    this.older = h("button", { type: "button", class: "load-older", hidden: true, onclick: () => this.loadOlder() }, "Load earlier messages");
    this.scroller = h("div", { class: "scroller" }, this.older, this.list);
    this.box = composer({
      placeholder: "Reply…",
      onSend: ({ text, attachments }) => this.send(text, attachments),
      onStop: () => this.stopReplies(),
    });
    /** @type {EventSource | null} */
    this.events = null;
    this.stopListening = () => {};
    // Disabled until the chat is loaded: they act on it.
    this.actions = h(
      "div",
      { class: "actions" },
      h("button", { type: "button", disabled: true, onclick: () => this.rename() }, "Rename"),
      this.muteButton,
      h("button", { type: "button", disabled: true, onclick: () => openSchedule(this.chat) }, "Schedule"),
      h("button", { type: "button", disabled: true, class: "danger", onclick: () => this.confirmDelete() }, "Delete"),
    );
    this.muteButton.disabled = true;
    // On a phone the actions fold behind this button (it is hidden on wider screens).
    this.actions.id = "chat-actions";
    const toggle = h("button", {
      type: "button",
      class: "actions-toggle",
      "aria-label": "Chat actions",
      "aria-expanded": "false",
      "aria-controls": "chat-actions",
      onclick: () => {
        const open = head.classList.toggle("actions-open");
        toggle.setAttribute("aria-expanded", String(open));
      },
    }, "⋯");
    const head = h("header", { class: "view-head" }, h("a", { class: "back-link", href: "#/" }, "← Chats"), this.title, toggle, this.meta, this.actions);
    this.head = head;
  }

  start() {
    this.main.replaceChildren(
      h(
        "section",
        { class: "view", "aria-labelledby": "view-title" },
        this.head,
        this.scroller,
        this.box.form,
      ),
    );
    // Follow the stream from its current end first, then load: whatever happens in
    // between arrives as events, and applying an event twice changes nothing. The load
    // waits for the stream to open (its start is fixed then), or to fail (the load then
    // says why, e.g. a deleted chat).
    const events = new EventSource(`${API}/ai_chats/${this.chatId}/events?after=latest`);
    this.events = events;
    for (const type of EVENTS) {
      events.addEventListener(type, (event) => this.receive(type, JSON.parse(event.data)));
    }
    let begun = false;
    const begin = () => {
      if (!begun) {
        begun = true;
        this.load();
      }
    };
    events.addEventListener("open", begin);
    events.addEventListener("error", begin);
    this.stopListening = on("schedule", ({ chatId, schedule }) => {
      if (chatId === this.chatId) {
        this.schedule = schedule;
        this.setChat(this.chat);
      }
    });
  }

  stop() {
    this.closed = true;
    this.events?.close();
    this.stopListening();
    for (const render of this.bodyRenders.values()) render.cancel();
  }

  async load() {
    try {
      const [chat, page, schedule] = await Promise.all([
        /** @type {Promise<AiChat>} */ (get(`ai_chats/${this.chatId}`)),
        /** @type {Promise<MessageList>} */ (get(`ai_chats/${this.chatId}/messages?last=${PAGE_SIZE}`)),
        activeSchedule(this.chatId),
      ]);
      if (this.closed) return;
      this.schedule = schedule;
      this.setChat(chat);
      for (const message of page.data) this.upsert(message);
      this.setOlder(page.page_info);
      this.loaded = true;
      this.refreshEnds();
      for (const [type, data] of this.backlog.splice(0)) this.receive(type, data);
      this.scrollToEnd();
      this.read();
      this.box.focus();
    } catch (error) {
      if (this.closed) return;
      this.events?.close();
      const text = error instanceof ApiError && error.status === 404 ? "This chat does not exist (it may have been deleted)." : reason(error);
      this.main.replaceChildren(h("section", { class: "view" }, h("div", { class: "view-head" }, h("a", { href: "#/" }, "← Chats"), h("h2", {}, text))));
    }
  }

  /** @param {PageInfo} pageInfo */
  setOlder(pageInfo) {
    this.olderCursor = pageInfo.has_previous_page ? pageInfo.start_cursor : null;
    this.older.hidden = !this.olderCursor;
  }

  async loadOlder() {
    if (!this.olderCursor) return;
    /** @type {MessageList} */
    const page = await get(`ai_chats/${this.chatId}/messages?last=${PAGE_SIZE}&before=${encodeURIComponent(this.olderCursor)}`);
    const first = this.list.firstChild;
    const height = this.scroller.scrollHeight;
    for (const message of page.data) {
      if (this.messages.has(message.id)) continue;
      const known = withKnownCalls(undefined, message);
      this.messages.set(message.id, known);
      const li = this.renderMessage(known);
      this.items.set(message.id, li);
      this.list.insertBefore(li, first);
    }
    this.scroller.scrollTop += this.scroller.scrollHeight - height; // keep the reader's place
    this.setOlder(page.page_info);
  }

  /** @param {AiChat | null} chat */
  setChat(chat) {
    if (!chat) return;
    this.chat = chat;
    for (const button of this.actions.querySelectorAll("button")) button.disabled = false;
    this.title.textContent = chat.title || "Untitled chat";
    document.title = `${chat.title || "Untitled chat"} · aichats`;
    const muted = chat.notification_preference === "none";
    fill(this.meta, 
      h("span", { "data-testid": "chat-usage" }, `${counted(chat.message_count, "message", "messages")} · ${counted(chat.blended_token_usage, "token", "tokens")}`),
      h("span", {}, chat.agent_identifier === "general" ? "General agent" : "Support agent"),
      muted ? h("span", { class: "tag" }, "Muted") : null,
      this.schedule
        ? h("span", { "data-testid": "chat-schedule" }, this.schedule.active ? `Scheduled: ${this.schedule.description}` : "Schedule disabled")
        : null,
    );
    this.muteButton.textContent = muted ? "Unmute" : "Mute";
    this.muteButton.setAttribute("aria-pressed", String(muted));
  }

  /**
   * An event of the chat's stream (``data``: a message, a delta or the chat, by ``type``).
   * @param {string} type
   * @param {any} data
   */
  receive(type, data) {
    if (!this.loaded) {
      this.backlog.push([type, data]);
      return;
    }
    const atEnd = this.nearEnd();
    if (type === "chat.updated") {
      this.setChat(data);
      emit("chat", data);
      return;
    }
    if (type === "message.delta") {
      this.applyDelta(data);
    } else if (type.startsWith("tool_call.")) {
      this.upsertCall(data);
    } else {
      // A reply that notifies raises a badge; app.js reads the open chat when it does.
      this.upsert(data);
    }
    if (atEnd) this.scrollToEnd();
  }

  /** @param {MessageDelta} delta */
  applyDelta(delta) {
    const message = this.messages.get(delta.message_id);
    const before = message?.status;
    if (!message || !applyDelta(message, delta)) return;
    const li = this.items.get(message.id);
    if (!li) return;
    if (before !== message.status) {
      li.className = messageClass(message);
      li.dataset.status = message.status;
      li.querySelector(".waiting-note")?.remove();
    }
    this.bodyRender(message.id)();
  }

  /**
   * The throttled redraw of a streaming reply's text: the first delta shows at once, the
   * next ones at most every RENDER_EVERY_MS, and the last one always.
   * @param {string} id
   */
  bodyRender(id) {
    let render = this.bodyRenders.get(id);
    if (!render) {
      render = throttle(() => {
        const message = this.messages.get(id);
        const body = this.items.get(id)?.querySelector(".msg-body");
        if (!message || !(body instanceof HTMLElement) || this.closed) return;
        const atEnd = this.nearEnd();
        renderMarkdown(body, message.content);
        if (atEnd) this.scrollToEnd();
      }, RENDER_EVERY_MS);
      this.bodyRenders.set(id, render);
    }
    return render;
  }

  /** @param {Message} incoming */
  upsert(incoming) {
    const known = this.messages.get(incoming.id);
    if (!supersedes(known, incoming)) return;
    const message = withKnownCalls(known, incoming);
    this.messages.set(message.id, message);
    // Drawn whole now: a redraw still waiting would draw the same text.
    this.bodyRenders.get(message.id)?.cancel();
    const old = this.items.get(message.id);
    const li = this.renderMessage(message, openCalls(old));
    this.items.set(message.id, li);
    if (old) old.replaceWith(li);
    else this.list.append(li);
    this.refreshEnds();
  }

  /**
   * A tool call of a reply, from a ``tool_call.*`` event or an answer: only its list is drawn
   * again (the calls unfolded stay so).
   * @param {ToolCallEvent} event
   */
  upsertCall({ message_id: id, tool_call: call }) {
    const message = this.messages.get(id);
    if (!message || !upsertToolCall(message, call)) return;
    const li = this.items.get(id);
    if (!li) return;
    const old = li.querySelector(".tool-calls");
    const list = this.callList(message, openCalls(old));
    if (old && list) old.replaceWith(list);
    else if (list) li.querySelector(".msg-head")?.after(list);
  }

  /**
   * @param {Message} message
   * @param {Set<string>} [open] the calls to show unfolded
   */
  callList(message, open) {
    return toolCallList(message.tool_calls ?? [], {
      open,
      onDecide: (call, decision, button) => this.decide(message.id, call, decision, button),
    });
  }

  /** The messages in the chat's order (the list's). */
  ordered() {
    /** @type {Message[]} */
    const ordered = [];
    for (const li of this.list.children) {
      const message = this.messages.get(/** @type {HTMLElement} */ (li).dataset.id || "");
      if (message) ordered.push(message);
    }
    return ordered;
  }

  /**
   * What depends on the end of the conversation: Regenerate is on the last message only (Retry
   * on any failed reply), and Stop shows while a reply is being written.
   */
  refreshEnds() {
    const ordered = this.ordered();
    const last = ordered.at(-1);
    for (const actions of this.list.querySelectorAll(".msg-actions")) {
      const message = this.messages.get(/** @type {HTMLElement} */ (actions.closest(".msg")).dataset.id || "");
      if (!message) continue;
      const label = writeAgain(message, last);
      if ((actions.textContent || null) !== label) fill(actions, label && this.writeAgainButton(message, label));
    }
    this.box.setStoppable(ordered.some(isActive));
  }

  /**
   * @param {Message} message
   * @param {"Retry" | "Regenerate"} label
   */
  writeAgainButton(message, label) {
    return h("button", {
      type: "button",
      title: label === "Retry" ? "Write this reply again" : "Write a new reply in place of this one",
      onclick: (/** @type {MouseEvent} */ event) => this.retry(message, /** @type {HTMLButtonElement} */ (event.currentTarget)),
    }, label);
  }

  /**
   * @param {Message} message
   * @param {Set<string>} [open] its tool calls to show unfolded
   */
  renderMessage(message, open) {
    const mine = message.role === "user";
    const who = mine ? (message.source === "schedule" ? "Scheduled prompt" : "You") : "Agent";
    const usage = message.usage;
    // The user's text is shown as they wrote it; the agent's is Markdown.
    const body = h("div", { class: mine ? "msg-body" : "msg-body markdown" }, mine ? message.content : null);
    if (!mine) renderMarkdown(body, message.content);
    const li = h(
      "li",
      { class: messageClass(message), id: `message-${message.id}`, "data-id": message.id, "data-status": message.status, "aria-busy": isActive(message) ? "true" : null },
      h(
        "div",
        { class: "msg-head" },
        h("span", { class: "msg-role" }, who),
        !mine && message.model ? h("span", {}, message.model) : null,
        !mine && message.model && message.model.startsWith("local:")
          ? h("span", { class: "tag", title: DEMO_NOTE, "data-testid": "demo-model" }, "demo model")
          : null,
        timeEl(message.created_at),
      ),
      mine ? null : this.callList(message, open),
      body,
      message.status === "pending" && !message.content ? h("span", { class: "sr-only" }, "Waiting for the agent…") : null,
      message.status === "waiting" ? h("p", { class: "waiting-note", role: "status" }, "Waiting for your approval") : null,
      message.attachments && message.attachments.length
        ? h("ul", { class: "attachments", "aria-label": "Attachments" }, message.attachments.map((a) => h("li", {}, "📎 ", a.filename || a.id)))
        : null,
      message.status === "failed" ? h("p", { class: "msg-error" }, `The reply failed: ${message.error || "unknown error"}`) : null,
      message.status === "cancelled" ? h("p", { class: "stopped-note", "data-testid": "stopped" }, "Stopped") : null,
      // Usage once a reply ended: a stopped one counts only the model calls it finished.
      !mine && (message.status === "completed" || (message.status === "cancelled" && Number(usage.blended_tokens) > 0))
        ? h(
          "div",
          { class: "msg-foot" },
          h("span", { class: "usage", title: "Tokens: input, output, and blended (as billed)" },
            `${formatNumber(usage.input_tokens)} in · ${formatNumber(usage.output_tokens)} out · ${counted(usage.blended_tokens, "token", "tokens")}`),
          this.demoNoteOn(message) ? h("p", { class: "hint", "data-testid": "demo-note" }, DEMO_NOTE) : null,
        )
        : null,
      mine ? null : h("div", { class: "msg-actions" }), // filled by refreshEnds() on the last message
    );
    return li;
  }

  /**
   * Whether ``message`` carries the demo-model note: the first local reply shown does, once.
   * @param {Message} message
   */
  demoNoteOn(message) {
    if (!message.model || !message.model.startsWith("local:")) return false;
    this.demoNoteId ??= message.id;
    return this.demoNoteId === message.id;
  }

  /**
   * @param {string} text
   * @param {Attachment[]} attachments
   */
  async send(text, attachments) {
    await post(`ai_chats/${this.chatId}/messages`, { message_text: text, message_attachments: attachments });
    // The message and its pending reply, so the reply has its place (and id) at once.
    /** @type {MessageList} */
    const tail = await get(`ai_chats/${this.chatId}/messages?last=2`);
    for (const message of tail.data) if (!this.messages.has(message.id)) this.upsert(message);
    this.scrollToEnd();
    emit("activity");
  }

  /**
   * Write a reply again (Retry on a failed one, Regenerate on a completed or stopped one).
   * @param {Message} message a failed reply, or the chat's last message, a reply that ended
   * @param {HTMLButtonElement} button its button
   */
  async retry(message, button) {
    button.disabled = true;
    const before = this.messages.get(message.id);
    try {
      /** @type {Message} */
      const retried = await post(`ai_chats/${this.chatId}/messages/${message.id}/retry`);
      // The stream may already have brought the new reply, or even its end: never step back.
      if (this.messages.get(message.id) === before) this.upsert(retried);
    } catch (error) {
      button.disabled = false;
      toast(reason(error));
    }
  }

  /**
   * Stop every reply being written (newest first): each is answered as it stands, ``cancelled``.
   * A reply that ended meanwhile (409) is left as it is.
   */
  async stopReplies() {
    for (const message of activeReplies(this.ordered())) {
      try {
        /** @type {Message} */
        const stopped = await post(`ai_chats/${this.chatId}/messages/${message.id}/cancel`);
        if (stopped && stopped.id === message.id) this.upsert(stopped);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 409)) throw error;
      }
    }
  }

  /**
   * Approve or deny a tool call that waits for the user.
   * @param {string} messageId
   * @param {ToolCall} call
   * @param {"approve" | "deny"} decision
   * @param {HTMLButtonElement} button
   */
  async decide(messageId, call, decision, button) {
    const group = button.parentElement;
    for (const each of group?.querySelectorAll("button") ?? []) each.disabled = true;
    try {
      /** @type {ToolCall} */
      const decided = await post(`ai_chats/${this.chatId}/tool_calls/${call.id}/${decision}`);
      if (decided && decided.id === call.id && decided.status) this.upsertCall({ message_id: messageId, tool_call: decided });
    } catch (error) {
      for (const each of group?.querySelectorAll("button") ?? []) each.disabled = false;
      toast(reason(error));
    }
  }

  async read() {
    if (this.closed) return;
    try {
      await post(`ai_chats/${this.chatId}/read`);
    } catch {
      // The badge stays; the next event tries again.
    }
  }

  rename() {
    if (!this.chat) return;
    const input = h("input", { id: "rename-title", value: this.chat.title || "", maxlength: 200, autofocus: true });
    openForm({
      title: "Rename chat",
      body: [h("label", { for: "rename-title" }, "Title"), input],
      submitLabel: "Rename",
      onSubmit: async () => {
        const title = input.value.trim();
        /** @type {AiChat} */
        const chat = await patch(`ai_chats/${this.chatId}`, { title: title || null });
        this.setChat(chat);
        emit("chat", chat);
      },
    });
  }

  async toggleMute() {
    if (!this.chat) return;
    const muted = this.chat.notification_preference === "none";
    try {
      /** @type {AiChat} */
      const chat = await patch(`ai_chats/${this.chatId}`, { notification_preference: muted ? "all" : "none" });
      this.setChat(chat);
      emit("chat", chat);
      toast(muted ? "Notifications on for this chat." : "Muted: this chat will not notify you.");
    } catch (error) {
      toast(reason(error));
    }
  }

  confirmDelete() {
    if (!this.chat) return;
    openForm({
      title: "Delete this chat?",
      body: h("p", {}, `“${this.chat.title || "Untitled chat"}”, its messages and its schedule will be deleted. The app offers no way to bring them back.`),
      submitLabel: "Delete",
      submitClass: "danger solid",
      onSubmit: async () => {
        await del(`ai_chats/${this.chatId}`);
        emit("chat-deleted", this.chatId);
        toast("Chat deleted.");
        location.hash = "#/";
      },
    });
  }

  nearEnd() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 120;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}

/**
 * The chat's schedule if it is active, else null. A chat has no schedule field, and asking
 * for a schedule that does not exist answers 404, which the browser logs as a console
 * error: so ask only for a chat the list of chats with an active schedule
 * (``only_active_crons``) names. (A disabled schedule shows once the editor has read it.)
 */
/**
 * @param {string} chatId
 * @returns {Promise<Schedule | null>}
 */
async function activeSchedule(chatId) {
  try {
    /** @type {AiChatList} */
    const page = await get(`ai_chats?only_active_crons=true&first=100`);
    if (!page.page_info.has_next_page && !page.data.some((chat) => chat.id === chatId)) return null;
    return await get(`ai_chats/${chatId}/schedule`);
  } catch {
    return null;
  }
}
