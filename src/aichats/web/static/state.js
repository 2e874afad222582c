// What the screens share: the signed-in session, the unread badges, the open chat, and a
// tiny event bus so that one screen's change (a renamed chat, a new reply) reaches the others.

export const state = {
  session: null,
  badges: {}, // chat id -> unread replies
  unread: 0, // unread notifications
  latestNotification: null,
  currentChatId: null,
};

const listeners = new Map();

/** Listen to ``name``; returns the function that stops listening. */
export function on(name, fn) {
  if (!listeners.has(name)) listeners.set(name, new Set());
  listeners.get(name).add(fn);
  return () => listeners.get(name).delete(fn);
}

export function emit(name, value) {
  for (const fn of listeners.get(name) || []) fn(value);
}
