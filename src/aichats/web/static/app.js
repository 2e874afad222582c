// @ts-check
// The web app's entry: sign in and out, the router (#/, #/new, #/chats/<id>, #/tools), and
// the notification bell with its live badge stream (GET /notifications/events).

import { API, ApiError, call, get, post, query, reason, whenSignedOut } from "./api.js";
import { reset as resetChatList, startChatList } from "./chatlist.js";
import { showChat, showNewChat } from "./conversation.js";
import { closeDialog } from "./dialog.js";
import { byId as $, h, timeEl } from "./dom.js";
import { emit, on, state } from "./state.js";
import { showTools } from "./tools.js";
import { refreshUsage, startUsage } from "./usage.js";

/** @import { Badges, Notification, NotificationList, Session } from "../api-types" */

let closeView = () => {};
/** @type {EventSource | null} */
let badgeStream = null;
let started = false;
const NOTIFICATIONS_PAGE = 20;
/** @type {string | null} */
let notificationsCursor = null; // where "Show older" continues

const apiKeyInput = () => /** @type {HTMLInputElement} */ ($("api-key"));

// ------------------------------------------------------------------ sign in / out

async function boot() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  whenSignedOut(() => showSignIn("Your session has ended (the key was revoked or you signed out elsewhere). Sign in again."));
  try {
    state.session = await call("GET", "/web/session");
    enter();
  } catch {
    showSignIn("");
  }
}

/** @param {string} message why (empty on a first visit) */
function showSignIn(message) {
  closeView();
  closeDialog();
  if (badgeStream) badgeStream.close();
  badgeStream = null;
  state.session = null;
  $("shell").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  document.title = "Sign in · aichats";
  apiKeyInput().focus();
}

/** @param {SubmitEvent} event */
async function signIn(event) {
  event.preventDefault();
  const input = apiKeyInput();
  const error = $("signin-error");
  error.textContent = "";
  if (!input.value.trim()) {
    error.textContent = "Enter your API key.";
    input.focus();
    return;
  }
  try {
    await call("POST", "/web/session", { api_key: input.value.trim() });
    // Read the session back: a browser that refused the cookie (plain http on a host other
    // than localhost) is told so, instead of failing on every later request.
    state.session = /** @type {Session} */ (await call("GET", "/web/session"));
  } catch (failure) {
    error.textContent =
      failure instanceof ApiError && failure.status === 401 && failure.message.includes("Bearer")
        ? "The browser did not keep the session cookie: serve aichats over https (or open it on localhost)."
        : failure instanceof ApiError && failure.status === 401
          ? "That API key is not valid: it is unknown or has been revoked."
          : reason(failure);
    input.select();
    return;
  }
  input.value = "";
  enter();
}

async function signOut() {
  try {
    await call("DELETE", "/web/session");
  } finally {
    showSignIn("You have signed out.");
  }
}

function enter() {
  $("signin").hidden = true;
  $("shell").hidden = false;
  if (!started) {
    started = true;
    startChatList();
    startBell();
    startUsage();
    window.addEventListener("hashchange", route);
  } else {
    resetChatList("");
    refreshUsage();
  }
  followBadges();
  route();
}

// ------------------------------------------------------------------ routing

function route() {
  if (!state.session) return;
  closeView();
  closeDialog();
  const match = location.hash.match(/^#\/chats\/([A-Za-z0-9_]+)$/);
  const main = $("main");
  const tools = location.hash === "#/tools";
  state.currentChatId = match ? match[1] : null;
  $("shell").dataset.view = match ? "chat" : location.hash === "#/new" ? "new" : tools ? "tools" : "home";
  if (tools) $("tools-link").setAttribute("aria-current", "page");
  else $("tools-link").removeAttribute("aria-current");
  if (match) {
    closeView = showChat(main, match[1]);
    clearBadge(match[1]);
  } else if (tools) {
    closeView = showTools(main);
  } else {
    document.title = "aichats";
    closeView = showNewChat(main);
  }
  emit("route");
}

// ------------------------------------------------------------------ bell and badges

/** @param {string} chatId */
function clearBadge(chatId) {
  if (state.badges[chatId]) {
    delete state.badges[chatId];
    emit("badges");
  }
}

function setBell() {
  const count = $("bell-count");
  count.hidden = state.unread === 0;
  count.textContent = state.unread > 99 ? "99+" : String(state.unread);
  $("bell").setAttribute("aria-label", state.unread ? `Notifications, ${state.unread} unread` : "Notifications");
}

/** The live state of badges and notifications; EventSource reconnects by itself. */
function followBadges() {
  if (badgeStream) badgeStream.close();
  badgeStream = new EventSource(`${API}/notifications/events`);
  badgeStream.addEventListener("badges", (event) => {
    /** @type {Badges} */
    const data = JSON.parse(event.data);
    const fresh = data.latest_notification_id !== state.latestNotification;
    state.badges = { ...data.ai_chats };
    state.unread = data.unread_count;
    state.latestNotification = data.latest_notification_id;
    // The chat on screen is being read: its badge clears at once.
    const open = state.currentChatId;
    if (open && state.badges[open] && document.visibilityState === "visible") {
      post(`ai_chats/${open}/read`).catch(() => {});
    }
    setBell();
    emit("badges");
    if (fresh) {
      emit("activity");
      if (!$("notification-panel").hidden) loadNotifications();
    }
  });
}

function startBell() {
  const bell = $("bell");
  const panel = $("notification-panel");
  const toggle = (/** @type {boolean} */ open) => {
    panel.hidden = !open;
    bell.setAttribute("aria-expanded", String(open));
    if (open) loadNotifications();
  };
  bell.addEventListener("click", () => toggle(Boolean(panel.hidden)));
  // Escape closes the list wherever the focus is in it, or on the bell (the focus after a click).
  bell.parentElement?.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !panel.hidden) {
      toggle(false);
      bell.focus();
    }
  });
  document.addEventListener("click", (event) => {
    const target = /** @type {Node | null} */ (event.target);
    if (!panel.hidden && !panel.contains(target) && !bell.contains(target)) toggle(false);
  });
  panel.addEventListener("click", (event) => {
    if (event.target instanceof Element && event.target.closest("a")) toggle(false);
  });
  $("older-notifications").addEventListener("click", () => loadNotifications(true));
  $("mark-all-read").addEventListener("click", async () => {
    await post("notifications/read", {});
    loadNotifications();
  });
  on("badges", setBell);
}

/** @param {Notification} n */
function notificationItem(n) {
  return h(
    "li",
    {},
    h(
      "a",
      { href: `#/chats/${n.ai_chat_id}`, class: n.read_at ? "" : "unread" },
      h("div", { class: "notification-title" }, n.read_at ? "" : h("span", { class: "sr-only" }, "Unread: "), n.title),
      h("div", { class: "notification-body" }, n.body),
      timeEl(n.created_at, { class: "hint" }),
    ),
  );
}

/**
 * The newest notifications (again), or with ``older`` the page after those shown.
 * @param {boolean} [older]
 */
async function loadNotifications(older = false) {
  const list = $("notification-list");
  const more = $("older-notifications");
  try {
    /** @type {NotificationList} */
    const page = await get(`notifications${query({ first: NOTIFICATIONS_PAGE, after: older ? notificationsCursor : null })}`);
    state.unread = page.unread_count;
    setBell();
    const items = page.data.map(notificationItem);
    if (older) list.append(...items);
    else list.replaceChildren(...(items.length ? items : [h("li", { class: "empty" }, "No notifications yet.")]));
    notificationsCursor = page.page_info.end_cursor;
    more.hidden = !page.page_info.has_next_page;
  } catch (error) {
    list.replaceChildren(h("li", { class: "empty" }, reason(error)));
  }
}

boot();
