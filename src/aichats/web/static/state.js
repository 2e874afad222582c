// @ts-check
// What the screens share: the signed-in session, the unread badges, the open chat, and a
// tiny event bus so that one screen's change (a renamed chat, a new reply) reaches the others.

/** @import { AiChat, Schedule, Session } from "../api-types" */

/**
 * @type {{
 *   session: Session | null,
 *   badges: Record<string, number>,
 *   unread: number,
 *   latestNotification: string | null,
 *   currentChatId: string | null,
 * }}
 */
export const state = {
  session: null,
  badges: {}, // chat id -> unread replies
  unread: 0, // unread notifications
  latestNotification: null,
  currentChatId: null,
};

/**
 * The events of the bus, and what each carries.
 * @typedef {{
 *   chat: AiChat,
 *   "chat-deleted": string,
 *   schedule: { chatId: string, schedule: Schedule | null },
 *   badges: undefined,
 *   route: undefined,
 *   activity: undefined,
 * }} Events
 */

/** @type {Map<string, Set<(value: any) => void>>} */
const listeners = new Map();

/**
 * Listen to ``name``; returns the function that stops listening.
 * @template {keyof Events} K
 * @param {K} name
 * @param {(value: Events[K]) => void} fn
 * @returns {() => void}
 */
export function on(name, fn) {
  let named = listeners.get(name);
  if (!named) listeners.set(name, (named = new Set()));
  named.add(fn);
  return () => {
    named.delete(fn);
  };
}

/**
 * Tell every listener of ``name``.
 * @template {keyof Events} K
 * @param {K} name
 * @param {Events[K]} [value]
 */
export function emit(name, value) {
  for (const fn of listeners.get(name) || []) fn(value);
}
