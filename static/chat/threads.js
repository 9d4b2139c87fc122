// The thread list stays live by polling a small JSON endpoint: titles, last activity and a
// "replying…" marker per thread. Polling (not a socket) because live events are published
// per thread; a per-user feed would be a second channel to run for one marker. It polls
// often only while some reply is being written, and not at all while the tab is hidden.

import { getJSON } from "./http.js";

const FAST_POLL_MS = 3_000; // while some thread is replying: the marker should clear promptly
const SLOW_POLL_MS = 15_000;

const list = document.querySelector("[data-thread-list]");
const empty = document.querySelector("[data-thread-list-empty]");
const template = document.querySelector("template[data-thread-item-template]");
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const UNITS = [
  ["year", 365 * 24 * 3600],
  ["month", 30 * 24 * 3600],
  ["week", 7 * 24 * 3600],
  ["day", 24 * 3600],
  ["hour", 3600],
  ["minute", 60],
];
let timer = null;

function ago(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return "just now";
}

function item(thread) {
  const element = list.querySelector(`[data-thread-id="${CSS.escape(thread.id)}"]`)
    ?? template.content.firstElementChild.cloneNode(true);
  element.dataset.threadId = thread.id;
  element.querySelector("a").href = thread.url;
  element.querySelector("[data-title]").textContent = thread.title || "New thread";
  element.querySelector("[data-replying]").hidden = !thread.replying;
  const time = element.querySelector("[data-updated]");
  time.dateTime = thread.updated_at;
  time.textContent = ago(thread.updated_at);
  return element;
}

function render(threads) {
  const items = threads.map(item);
  const order = (elements) => elements.map((element) => element.dataset.threadId).join();
  // Moving an element would drop keyboard focus from it: reorder only when the order changed.
  if (order(items) !== order([...list.children])) list.replaceChildren(...items);
  empty.hidden = threads.length > 0;
}

async function poll() {
  clearTimeout(timer);
  if (document.visibilityState !== "visible") return;
  let delay = SLOW_POLL_MS;
  try {
    const { threads } = await getJSON(list.dataset.activityUrl);
    render(threads);
    if (threads.some((thread) => thread.replying)) delay = FAST_POLL_MS;
  } catch (error) {
    if (error.status === 401) return; // signed out elsewhere: nothing more to show
  }
  timer = setTimeout(poll, delay);
}

document.addEventListener("visibilitychange", poll);
// The page was rendered with fresh markers: the first poll can wait.
timer = setTimeout(poll, list.querySelector("[data-replying]:not([hidden])") ? FAST_POLL_MS : SLOW_POLL_MS);
