// The thread list stays live by polling a small JSON endpoint: titles, last activity and a
// "replying…" marker per thread. Polling (not a socket) because live events are published
// per thread; a per-user feed would be a second channel to run for one marker. It polls
// every POLL_MS while the tab is visible (a reply started on another device shows within
// that, even a short one), at once when the tab comes back, and not at all while hidden.

import { setUpThreadActions } from "./actions.js";
import { getJSON } from "./http.js";
import { keepTimesFresh, showTime } from "./times.js";

// One indexed query a poll; fast enough to catch a reply of a few seconds started elsewhere.
const POLL_MS = 2_000;

const list = document.querySelector("[data-thread-list]");
const empty = document.querySelector("[data-thread-list-empty]");
const template = document.querySelector("template[data-thread-item-template]");
let timer = null;

function item(thread) {
  let element = list.querySelector(`[data-thread-id="${CSS.escape(thread.id)}"]`);
  if (!element) {
    element = template.content.firstElementChild.cloneNode(true);
    for (const target of element.querySelectorAll("[action], [href]")) {
      const name = target.hasAttribute("action") ? "action" : "href";
      target.setAttribute(name, target.getAttribute(name).replace("THREAD_ID", thread.id));
    }
  }
  const title = thread.title || "Untitled";
  element.dataset.threadId = thread.id;
  element.querySelector("a").href = thread.url;
  element.querySelector("[data-title]").textContent = title;
  const archive = element.querySelector("[data-archive] button");
  archive.setAttribute("aria-label", `${archive.dataset.actionLabel} ${title}`);
  const remove = element.querySelector("[data-delete]");
  remove.dataset.title = title;
  remove.setAttribute("aria-label", `Delete ${title}`);
  element.querySelector("[data-replying]").hidden = !thread.replying;
  // A thread shared with the person is marked, and only its owner files or deletes it.
  element.querySelector("[data-shared]").hidden = !thread.shared;
  element.querySelector(".thread-item__actions").hidden = thread.shared;
  showTime(element.querySelector("[data-updated]"), thread.updated_at);
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
  try {
    render((await getJSON(list.dataset.activityUrl)).threads);
  } catch (error) {
    if (error.status === 401) return; // signed out elsewhere: nothing more to show
  }
  timer = setTimeout(poll, POLL_MS);
}

function removed(element) {
  element.remove();
  empty.hidden = list.children.length > 0;
}

setUpThreadActions(document.body, {
  archived: (form) => removed(form.closest("[data-thread-item]")),
  deleted: (link) => removed(link.closest("[data-thread-item]")),
});
keepTimesFresh(list, "time[data-updated]");
// The archived list is not polled: nothing there is being written to.
if (list.dataset.activityUrl) {
  document.addEventListener("visibilitychange", poll);
  timer = setTimeout(poll, POLL_MS);
}
