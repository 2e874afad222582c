// @ts-check
// A conversation: its messages, the agent's reply streaming in (server-sent events), the
// composer, usage, and the chat's actions (rename, mute, schedule, delete).

import { API, ApiError, del, get, patch, post, reason } from "./api.js";
import { composer } from "./composer.js";
import { openForm } from "./dialog.js";
import { fill, h, timeEl, toast } from "./dom.js";
import { counted, formatNumber } from "./format.js";
import { applyDelta, messageClass, supersedes } from "./messages.js";
import { openSchedule } from "./schedule.js";
import { emit, on } from "./state.js";

/** @import { AiChat, AiChatList, Attachment, Message, MessageDelta, MessageList, PageInfo, Schedule } from "../api-types" */

const PAGE_SIZE = 50;
// What a person should know about replies from the built-in local model.
const DEMO_NOTE =
  "This reply comes from the built-in demo model, a small local model (135M parameters): quick, offline, and often wrong. " +
  "An operator switches every agent to a real model with one setting: AICHATS_MODEL=openai:<model> " +
  "(OpenAI, Ollama, vLLM, llama.cpp's server) or AICHATS_MODEL=anthropic:<model>.";
const EVENTS = ["message.created", "message.retried", "message.delta", "message.completed", "message.failed", "chat.updated"];

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
      this.messages.set(message.id, message);
      const li = this.renderMessage(message);
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
    } else {
      // A reply that notifies raises a badge; app.js reads the open chat when it does.
      this.upsert(data);
    }
    if (atEnd) this.scrollToEnd();
  }

  /** @param {MessageDelta} delta */
  applyDelta(delta) {
    const message = this.messages.get(delta.message_id);
    if (!message || !applyDelta(message, delta)) return;
    const li = this.items.get(message.id);
    if (!li) return;
    li.className = messageClass(message);
    const body = li.querySelector(".msg-body");
    if (body) body.textContent = message.content;
  }

  /** @param {Message} message */
  upsert(message) {
    if (!supersedes(this.messages.get(message.id), message)) return;
    this.messages.set(message.id, message);
    const li = this.renderMessage(message);
    const old = this.items.get(message.id);
    this.items.set(message.id, li);
    if (old) old.replaceWith(li);
    else this.list.append(li);
  }

  /** @param {Message} message */
  renderMessage(message) {
    const mine = message.role === "user";
    const who = mine ? (message.source === "schedule" ? "Scheduled prompt" : "You") : "Agent";
    const usage = message.usage;
    const li = h(
      "li",
      { class: messageClass(message), id: `message-${message.id}`, "data-status": message.status, "aria-busy": message.status === "streaming" || message.status === "pending" ? "true" : null },
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
      h("div", { class: "msg-body" }, message.content),
      message.status === "pending" && !message.content ? h("span", { class: "sr-only" }, "Waiting for the agent…") : null,
      message.attachments && message.attachments.length
        ? h("ul", { class: "attachments", "aria-label": "Attachments" }, message.attachments.map((a) => h("li", {}, "📎 ", a.filename || a.id)))
        : null,
      message.status === "failed"
        ? h(
          "div",
          {},
          h("p", { class: "msg-error" }, `The reply failed: ${message.error || "unknown error"}`),
          h("button", { type: "button", onclick: (/** @type {MouseEvent} */ event) => this.retry(message, /** @type {HTMLButtonElement} */ (event.currentTarget)) }, "Retry"),
        )
        : null,
      !mine && message.status === "completed"
        ? h(
          "div",
          { class: "msg-foot" },
          h("span", { class: "usage", title: "Tokens: input, output, and blended (as billed)" },
            `${formatNumber(usage.input_tokens)} in · ${formatNumber(usage.output_tokens)} out · ${counted(usage.blended_tokens, "token", "tokens")}`),
          this.demoNoteOn(message) ? h("p", { class: "hint", "data-testid": "demo-note" }, DEMO_NOTE) : null,
        )
        : null,
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
   * @param {Message} message a failed reply
   * @param {HTMLButtonElement} button its Retry button
   */
  async retry(message, button) {
    button.disabled = true;
    try {
      /** @type {Message} */
      const retried = await post(`ai_chats/${this.chatId}/messages/${message.id}/retry`);
      // The stream may already have brought the retry's outcome: never step back from it.
      if (this.messages.get(message.id)?.status === "failed") this.upsert(retried);
    } catch (error) {
      button.disabled = false;
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
