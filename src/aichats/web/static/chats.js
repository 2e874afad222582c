// @ts-check
// The order and filter of the chat list. Pure (no DOM): tests/web/js runs it in node.

/** @import { AiChat } from "../api-types" */

/**
 * When a chat last saw activity: its last message, or its creation.
 * @param {AiChat} chat
 */
export function activity(chat) {
  return chat.last_message_at || chat.created_at;
}

/**
 * Most recent activity first (ISO instants of one format compare as text).
 * @param {Iterable<AiChat>} chats
 */
export function sortByActivity(chats) {
  return [...chats].sort((a, b) => (activity(a) < activity(b) ? 1 : activity(a) > activity(b) ? -1 : 0));
}

/**
 * Whether ``chat`` belongs in a list searched for ``query`` (in its title, ignoring case).
 * @param {AiChat} chat
 * @param {string} query
 */
export function matchesTitle(chat, query) {
  return !query || (chat.title || "").toLowerCase().includes(query.toLowerCase());
}

/**
 * Whether a chat not yet listed lies beyond the pages loaded so far (older than the oldest
 * one listed, while more pages remain): it then shows up when scrolled to, not now.
 * @param {AiChat} chat
 * @param {Iterable<AiChat>} loaded the chats listed, in any order (a refresh adds newer ones last)
 * @param {boolean} hasMore
 */
export function beyondLoaded(chat, loaded, hasMore) {
  if (!hasMore) return false;
  let oldest = null;
  for (const known of loaded) if (oldest === null || activity(known) < oldest) oldest = activity(known);
  return oldest !== null && activity(chat) < oldest;
}
