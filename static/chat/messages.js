// The message list of the thread page: builds message elements from the server's own
// <template>s, renders their text as markdown and keeps the view pinned to the newest.

import { decorateCodeBlocks } from "./code.js";
import { renderMarkdown } from "./markdown.js";

// Deltas arriving within this window are rendered together: a backlog of hundreds of
// deltas costs a few renders, not hundreds.
const RENDER_DELAY_MS = 30;
// Within this distance of the bottom the reader is following the conversation.
const PINNED_PX = 96;

export class MessageList {
  constructor(root) {
    this.list = root.querySelector("[data-messages]");
    this.empty = root.querySelector("[data-empty]");
    this.templates = Object.fromEntries(
      [...root.querySelectorAll("template[data-message-template]")].map((t) => [t.dataset.messageTemplate, t]),
    );
    // The text so far of each reply still being written; deltas are appended to it.
    this.texts = new Map();
    this.dirty = new Set();
    this.renderTimer = null;
    for (const item of this.list.querySelectorAll("[data-content]")) {
      this.texts.set(item.dataset.messageId, item.dataset.content);
      item.removeAttribute("data-content");
    }
    decorateCodeBlocks(this.list);
  }

  find(id) {
    return this.list.querySelector(`[data-message-id="${CSS.escape(id)}"]`);
  }

  /** Return the element of the reply being written, if any. */
  streaming() {
    return this.list.querySelector('[data-status="streaming"]');
  }

  /** Return the id of the oldest message shown: the cursor for paging in earlier ones. */
  oldestId() {
    return this.list.querySelector("[data-message-id]")?.dataset.messageId;
  }

  create(message) {
    const item = this.templates[message.role].content.firstElementChild.cloneNode(true);
    item.dataset.messageId = message.id;
    const retry = item.querySelector("[data-retry]");
    if (retry) retry.action = retry.getAttribute("action").replace("MESSAGE_ID", message.id);
    item.querySelector("[data-body]").replaceChildren(renderMarkdown(message.content));
    this.setStatus(item, message.status, message.error);
    if (message.status === "streaming") this.texts.set(message.id, message.content);
    return item;
  }

  setStatus(item, status, error) {
    item.dataset.status = status;
    if (item.hasAttribute("aria-busy")) item.setAttribute("aria-busy", String(status === "streaming"));
    item.querySelector("[data-error]").textContent = error?.detail ?? "";
  }

  /** Append a message (once); `replacing` is the pending element of the send it confirms. */
  add(message, replacing = null) {
    if (this.find(message.id)) {
      replacing?.remove();
      return;
    }
    const item = this.create(message);
    this.keepPinned(() => (replacing ? replacing.replaceWith(item) : this.list.append(item)));
    this.empty.hidden = true;
  }

  /** Append text to a reply being written; return false when it is not on the page. */
  appendText(id, text) {
    if (!this.texts.has(id)) return false;
    this.texts.set(id, this.texts.get(id) + text);
    this.dirty.add(id);
    this.renderTimer ??= setTimeout(() => this.renderDirty(), RENDER_DELAY_MS);
    return true;
  }

  end(id, status, error) {
    const item = this.find(id);
    if (!item) return false;
    this.renderDirty();
    this.texts.delete(id);
    this.keepPinned(() => this.setStatus(item, status, error));
    return true;
  }

  renderDirty() {
    clearTimeout(this.renderTimer);
    this.renderTimer = null;
    this.keepPinned(() => {
      for (const id of this.dirty) {
        this.find(id)?.querySelector("[data-body]").replaceChildren(renderMarkdown(this.texts.get(id) ?? ""));
      }
    });
    this.dirty.clear();
  }

  /** Replace everything shown with a snapshot's messages. */
  reset(messages) {
    this.texts.clear();
    this.dirty.clear();
    this.keepPinned(() => this.list.replaceChildren(...messages.map((message) => this.create(message))));
    this.empty.hidden = messages.length > 0;
  }

  /** Put server-rendered earlier messages above the others; return the first of them. */
  prepend(html) {
    const template = document.createElement("template");
    template.innerHTML = html; // sanitised on the server, and inert inside a <template>
    const first = template.content.firstElementChild;
    decorateCodeBlocks(template.content);
    this.list.prepend(template.content);
    return first;
  }

  /** Run a change above what the reader sees without moving what they see. */
  keepInPlace(change) {
    const anchor = this.list.firstElementChild;
    const top = anchor?.getBoundingClientRect().top;
    change();
    if (anchor) window.scrollBy(0, anchor.getBoundingClientRect().top - top);
  }

  /** Show a message being sent, until the server confirms it. */
  addPending(content) {
    const item = this.templates.user.content.firstElementChild.cloneNode(true);
    // Not a message yet: no id, role or status for scripts and tests to mistake it for one.
    for (const name of ["data-message-id", "data-role", "data-status"]) item.removeAttribute(name);
    item.classList.add("message--pending");
    item.querySelector("[data-body]").replaceChildren(renderMarkdown(content));
    this.keepPinned(() => this.list.append(item), true);
    this.empty.hidden = true;
    return item;
  }

  /** Put a pending message back after a reset replaced the list. */
  keepPending(item) {
    this.list.append(item);
    this.empty.hidden = true;
  }

  removePending(item) {
    item.remove();
    this.empty.hidden = this.list.childElementCount > 0;
  }

  scrollToEnd() {
    window.scrollTo({ top: document.documentElement.scrollHeight });
  }

  /** Run a change to the list; follow the newest text if the reader was at the bottom (or `force`). */
  keepPinned(change, force = false) {
    const root = document.documentElement;
    const pinned = force || root.scrollHeight - (window.scrollY + window.innerHeight) < PINNED_PX;
    change();
    if (pinned) this.scrollToEnd();
  }
}
