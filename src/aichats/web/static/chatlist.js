// @ts-check
// The chat list: most recent activity first, unread badges, title search, and infinite
// scroll through the API's cursor pages. It is kept fresh by the events other screens emit
// ("chat", "chat-deleted", "activity", "badges") rather than by reloading.

import { get, query, reason } from "./api.js";
import { activity, beyondLoaded, matchesTitle, sortByActivity } from "./chats.js";
import { byId, debounce, h, timeEl, toast } from "./dom.js";
import { on, state } from "./state.js";

/** @import { AiChat, AiChatList } from "../api-types" */

const PAGE_SIZE = 30;

const list = {
  /** @type {Map<string, AiChat>} */
  chats: new Map(), // id -> chat
  /** @type {Map<string, HTMLLIElement>} */
  items: new Map(), // id -> <li>
  /** @type {string | null} */
  cursor: null,
  hasMore: true,
  loading: false,
  query: "",
  generation: 0, // bumped by a new search, so answers to an older one are dropped
};

/** @type {HTMLElement | undefined} */
let ul;
/** @type {HTMLElement} */
let status;
/** @type {HTMLElement} */
let sidebar;
/** @type {HTMLElement} */
let sentinel;

export function startChatList() {
  ul = byId("chat-list");
  status = byId("list-status");
  sidebar = byId("sidebar");
  sentinel = byId("list-sentinel");
  const search = /** @type {HTMLInputElement} */ (byId("search"));
  search.addEventListener("input", debounce(() => reset(search.value.trim()), 250));
  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadMore();
  }, { root: sidebar, rootMargin: "200px" }).observe(sentinel);
  on("chat", upsert);
  on("chat-deleted", remove);
  on("badges", render);
  on("route", render);
  on("activity", refreshTop);
  reset("");
}

/**
 * Forget everything and list again (sign in, or a new search).
 * @param {string} [text] the title search (default: the current one)
 */
export function reset(text = list.query) {
  list.generation += 1;
  list.query = text;
  list.chats.clear();
  list.items.clear();
  ul?.replaceChildren();
  list.cursor = null;
  list.hasMore = true;
  list.loading = false;
  loadMore();
}

async function loadMore() {
  if (list.loading || !list.hasMore) return;
  list.loading = true;
  const generation = list.generation;
  status.textContent = "Loading…";
  try {
    /** @type {AiChatList} */
    const page = await get(`ai_chats${query({ order: "last_activity_at", first: PAGE_SIZE, after: list.cursor, query: list.query })}`);
    if (generation !== list.generation) return;
    for (const chat of page.data) if (!list.chats.has(chat.id)) list.chats.set(chat.id, chat);
    list.cursor = page.page_info.end_cursor;
    list.hasMore = page.page_info.has_next_page;
    render();
  } catch (error) {
    if (generation === list.generation) status.textContent = reason(error);
    return;
  } finally {
    if (generation === list.generation) list.loading = false;
  }
  // The observer fires on changes only: if the sentinel is still in view, keep going.
  const box = sidebar.getBoundingClientRect();
  if (list.hasMore && sentinel.getBoundingClientRect().top < box.bottom + 200) loadMore();
}

/** Reread the first page (new activity somewhere) and merge it in. */
async function refreshTop() {
  const generation = list.generation;
  try {
    /** @type {AiChatList} */
    const page = await get(`ai_chats${query({ order: "last_activity_at", first: PAGE_SIZE, query: list.query })}`);
    if (generation !== list.generation) return;
    for (const chat of page.data) list.chats.set(chat.id, chat);
    render();
  } catch (error) {
    toast(reason(error));
  }
}

/** @param {AiChat} chat a chat created or changed elsewhere */
function upsert(chat) {
  if (!matchesTitle(chat, list.query)) {
    remove(chat.id);
    return;
  }
  const known = list.chats.get(chat.id);
  // A chat beyond the loaded pages stays there: it shows up when scrolled to.
  if (!known && beyondLoaded(chat, list.chats.values(), list.hasMore)) return;
  list.chats.set(chat.id, chat);
  render();
}

/** @param {string} id */
function remove(id) {
  list.chats.delete(id);
  const li = list.items.get(id);
  if (li) li.remove();
  list.items.delete(id);
  render();
}

/** @param {AiChat} chat */
function itemContent(chat) {
  const unread = state.badges[chat.id] || 0;
  const current = chat.id === state.currentChatId;
  return h(
    "a",
    { href: `#/chats/${chat.id}`, "aria-current": current ? "page" : null, "data-chat-id": chat.id },
    h("span", { class: "chat-title" }, chat.title || "Untitled chat"),
    unread ? h("span", { class: "badge", "data-badge": chat.id }, String(unread), h("span", { class: "sr-only" }, " unread")) : null,
    h(
      "span",
      { class: "chat-sub" },
      timeEl(activity(chat)),
      chat.notification_preference === "none" ? h("span", { class: "tag muted-tag" }, "Muted") : null,
    ),
  );
}

/** Bring the list's elements in line with the data, moving nodes only where the order changed. */
function render() {
  if (!ul) return;
  const chats = sortByActivity(list.chats.values());
  chats.forEach((chat, index) => {
    let li = list.items.get(chat.id);
    const content = itemContent(chat);
    if (!li) {
      li = h("li", {}, content);
      list.items.set(chat.id, li);
    } else {
      const old = li.firstChild;
      const hadFocus = document.activeElement === old;
      li.replaceChildren(content);
      if (hadFocus) content.focus();
    }
    if (ul && ul.children[index] !== li) ul.insertBefore(li, ul.children[index] || null);
  });
  if (!chats.length && !list.hasMore) {
    status.textContent = list.query ? `No chat title contains “${list.query}”.` : "No chats yet. Start one with “New chat”.";
  } else {
    status.textContent = list.hasMore ? "" : chats.length > PAGE_SIZE ? "That's all your chats." : "";
  }
}
