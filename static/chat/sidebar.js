// The thread page's sidebar: collapsible beside the conversation on wide screens, an
// off-canvas drawer on narrow ones; searched on the server as the person types.

import { getJSON } from "./http.js";

const NARROW = window.matchMedia("(max-width: 900px)");
const SEARCH_DELAY_MS = 200;
// The sidebar is a side view: its titles and "replying" dots are refreshed at this pace while visible.
const REFRESH_MS = 10_000;
const COLLAPSED_KEY = "chatsite.sidebar.collapsed";
const SCROLL_KEY = "chatsite.sidebar.scroll";

export function setUpSidebar(app) {
  const sidebar = app.querySelector("[data-sidebar]");
  const list = sidebar.querySelector("[data-sidebar-list]");
  const backdrop = app.querySelector("[data-sidebar-backdrop]");
  const toggle = app.querySelector("[data-sidebar-toggle]");
  const search = sidebar.querySelector("[data-sidebar-search]");
  const query = search.elements.q;
  let searchTimer = null;
  let searched = "";

  const isOpen = () => (NARROW.matches ? app.dataset.sidebarState === "open" : app.dataset.sidebarState !== "collapsed");

  function show(open, { focus = false } = {}) {
    if (NARROW.matches) {
      app.dataset.sidebarState = open ? "open" : "closed";
      backdrop.hidden = !open;
      // Closed, the drawer is off screen: keep its links out of the tab order and away from screen readers.
      sidebar.inert = !open;
    } else {
      app.dataset.sidebarState = open ? "expanded" : "collapsed";
      sidebar.inert = !open;
      localStorage.setItem(COLLAPSED_KEY, open ? "" : "1");
    }
    toggle.setAttribute("aria-expanded", String(open));
    if (focus && open) (list.querySelector("[aria-current]") ?? query).focus({ preventScroll: true });
    if (focus && !open) toggle.focus();
  }

  function layOut() {
    backdrop.hidden = true;
    if (NARROW.matches) show(false);
    else show(!localStorage.getItem(COLLAPSED_KEY));
  }

  async function runSearch() {
    const text = query.value.trim();
    if (text === searched) return;
    searched = text;
    const params = new URLSearchParams({ q: text, current: list.dataset.currentId });
    try {
      const { html } = await getJSON(`${search.dataset.url}?${params}`);
      if (searched !== text) return; // a newer search is on its way
      const template = document.createElement("template");
      template.innerHTML = html; // rendered and escaped by the server
      list.replaceChildren(template.content);
      list.scrollTop = 0;
    } catch {
      searched = ""; // try again on the next keystroke
    }
  }

  /** Bring titles and "replying" dots up to date, from the list page's own activity poll. */
  async function refresh() {
    if (document.visibilityState !== "visible") return;
    try {
      for (const thread of (await getJSON(list.dataset.activityUrl)).threads) {
        const item = list.querySelector(`[data-sidebar-thread="${CSS.escape(thread.id)}"]`);
        if (!item) continue;
        item.querySelector("[data-title]").textContent = thread.title || "Untitled";
        item.querySelector("[data-replying]").hidden = !thread.replying;
      }
    } catch {
      // A missed refresh is harmless: the next one, or the next page, catches up.
    }
  }

  toggle.addEventListener("click", () => show(!isOpen(), { focus: NARROW.matches }));
  sidebar.querySelector("[data-sidebar-close]").addEventListener("click", () => show(false, { focus: true }));
  backdrop.addEventListener("click", () => show(false, { focus: true }));
  document.addEventListener(
    "keydown",
    (event) => {
      if (event.key !== "Escape" || !NARROW.matches || !isOpen()) return;
      // Esc closes the drawer first; it must not also stop the reply being written.
      event.stopImmediatePropagation();
      event.preventDefault();
      show(false, { focus: true });
    },
    true,
  );
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    clearTimeout(searchTimer);
    runSearch();
  });
  query.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(runSearch, SEARCH_DELAY_MS);
  });
  NARROW.addEventListener("change", layOut);
  // Switching threads reloads the page: keep the list where the person left it.
  list.scrollTop = Number(sessionStorage.getItem(SCROLL_KEY) ?? 0);
  window.addEventListener("pagehide", () => sessionStorage.setItem(SCROLL_KEY, String(list.scrollTop)));
  layOut();
  setInterval(refresh, REFRESH_MS);
  document.addEventListener("visibilitychange", refresh);

  return {
    /** Show the thread just saved (a new chat's first message) at the top of the list, as the current one. */
    added(thread) {
      list.dataset.currentId = thread.id;
      list.querySelector("[data-sidebar-empty]")?.remove();
      let today = list.querySelector(".sidebar__group");
      if (today?.querySelector(".sidebar__label").textContent !== "Today") {
        today = document.createElement("section");
        today.className = "sidebar__group";
        today.innerHTML = '<h2 class="sidebar__label">Today</h2><ul class="sidebar__threads"></ul>';
        list.prepend(today);
      }
      const item = document.createElement("li");
      const link = Object.assign(document.createElement("a"), { className: "sidebar__item", href: thread.url });
      link.dataset.sidebarThread = thread.id;
      link.setAttribute("aria-current", "page");
      const title = Object.assign(document.createElement("span"), { className: "sidebar__title" });
      title.dataset.title = "";
      const replying = Object.assign(document.createElement("span"), { className: "sidebar__replying", hidden: true });
      replying.dataset.replying = "";
      replying.innerHTML = '<span class="replying__dot" aria-hidden="true"></span><span class="visually-hidden">replying…</span>';
      link.append(title, replying);
      item.append(link);
      today.querySelector("ul").prepend(item);
      this.renamed(thread.id, thread.title);
    },
    /** Show or hide a thread's "replying" dot (the open thread's, told by its own socket). */
    replying(id, on) {
      const element = list.querySelector(`[data-sidebar-thread="${CSS.escape(id)}"] [data-replying]`);
      if (element) element.hidden = !on;
    },
    /** Show a thread's new title. */
    renamed(id, title) {
      const element = list.querySelector(`[data-sidebar-thread="${CSS.escape(id)}"] [data-title]`);
      if (element) element.textContent = title || "Untitled";
    },
  };
}
