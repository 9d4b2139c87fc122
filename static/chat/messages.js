// The message list of the thread page: builds message elements from the server's own
// <template>s, renders their text as markdown, keeps the view pinned to the newest, and
// runs each message's actions (the buttons of its actions bar, found by data attribute).

import { decorateCodeBlocks } from "./code.js";
import { renderMarkdown } from "./markdown.js";
import { foldPart, foldText, renderSteps } from "./steps.js";
import { keepTimesFresh, showTime } from "./times.js";

// Deltas arriving within this window are rendered together: a backlog of hundreds of
// deltas costs a few renders, not hundreds.
const RENDER_DELAY_MS = 30;
// Within this distance of the bottom the reader is following the conversation.
const PINNED_PX = 96;
const COPIED_MS = 1_500;

export class MessageList {
  constructor(root) {
    this.list = root.querySelector("[data-messages]");
    // Who reads the page: their own messages sit on the right, other people's on the left under their names.
    this.personId = root.dataset.personId;
    this.empty = root.querySelector("[data-empty]");
    this.templates = Object.fromEntries(
      [...root.querySelectorAll("template[data-message-template]")].map((t) => [t.dataset.messageTemplate, t]),
    );
    // The text so far of each reply still being written; deltas are appended to it.
    this.texts = new Map();
    this.dirty = new Set();
    this.renderTimer = null;
    // The parts of each reply (streaming/parts.py): its steps are drawn from them.
    this.parts = new Map();
    // Called when text arrives below the view of a reader who scrolled up.
    this.onUnseen = () => {};
    // Called with (tool call id, approved) when a person answers an approval card.
    this.onApprove = () => {};
    // Whether a decision on a tool call is on its way to the log: its card keeps its buttons disabled.
    this.deciding = () => false;
    for (const item of this.list.querySelectorAll('[data-status="streaming"]')) {
      this.texts.set(item.dataset.messageId, item.dataset.content);
    }
    for (const item of this.list.querySelectorAll('[data-role="assistant"]')) this.showSteps(item);
    decorateCodeBlocks(this.list);
    this.list.addEventListener("click", (event) => {
      const copy = event.target.closest("[data-copy]");
      if (copy) this.copy(copy);
      const approve = event.target.closest("[data-approve]");
      if (approve) this.approve(approve);
    });
    keepTimesFresh(this.list, "time[data-time]");
  }

  /** Return the Markdown source of a message, as written so far. */
  source(item) {
    return this.texts.get(item.dataset.messageId) ?? item.dataset.content ?? "";
  }

  /** Put a message's Markdown on the clipboard and say so on its button for a moment. */
  async copy(button) {
    const item = button.closest("[data-message-id]");
    const label = button.getAttribute("aria-label");
    try {
      await navigator.clipboard.writeText(this.source(item));
    } catch {
      button.title = "Copying is not allowed here";
      return;
    }
    button.querySelector("[data-icon-copy]").hidden = true;
    button.querySelector("[data-icon-copied]").hidden = false;
    button.setAttribute("aria-label", "Copied");
    button.title = "Copied";
    setTimeout(() => {
      button.querySelector("[data-icon-copy]").hidden = false;
      button.querySelector("[data-icon-copied]").hidden = true;
      button.setAttribute("aria-label", label);
      button.title = "Copy";
    }, COPIED_MS);
  }

  /** Take up a reply's parts (given, or those its element carries) and draw its steps. */
  showSteps(item, parts = null) {
    const steps = item.querySelector("[data-steps]");
    if (!steps) return;
    parts ??= steps.dataset.parts ? JSON.parse(steps.dataset.parts) : null;
    // A reply of text alone carries no parts: its text so far is its one part.
    parts ??= item.dataset.content ? [{ type: "text", text: item.dataset.content }] : [];
    this.parts.set(item.dataset.messageId, structuredClone(parts));
    this.drawSteps(item);
  }

  drawSteps(item) {
    const parts = this.parts.get(item.dataset.messageId) ?? [];
    renderSteps(item.querySelector("[data-steps]"), parts, item.dataset.status === "streaming", this.deciding);
  }

  /** Draw again the steps of the reply holding a tool call (its decision was refused, say). */
  redrawToolCall(toolCallId) {
    const card = this.list.querySelector(`.step--tool[data-tool-call-id="${CSS.escape(toolCallId)}"]`);
    const item = card?.closest("[data-message-id]");
    if (item) this.keepPinned(() => this.drawSteps(item));
  }

  /** Return whether a tool call still waits for a decision, as the events applied so far tell. */
  approvalRequested(toolCallId) {
    for (const [id, parts] of this.parts) {
      const approval = parts.find((part) => part.type === "approval" && part.tool_call_id === toolCallId);
      if (approval) return approval.state === "requested" && this.find(id)?.dataset.status === "streaming";
    }
    return false;
  }

  /** Apply a part event to its reply; return false when the reply is not on the page. */
  applyPart(event) {
    const item = this.find(event.message_id);
    const parts = this.parts.get(event.message_id);
    if (!item || !parts) return false;
    foldPart(parts, event);
    this.keepPinned(() => this.drawSteps(item));
    return true;
  }

  /** Answer an approval card: its buttons wait for the decision to come back through the log (`deciding`). */
  approve(button) {
    for (const sibling of button.parentElement.querySelectorAll("[data-approve]")) sibling.disabled = true;
    this.onApprove(button.dataset.toolCallId, button.dataset.approve === "true");
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
    item.dataset.parentId = message.parent_id ?? "";
    if (message.versions) item.dataset.versionIds = message.versions.ids.join(" ");
    item.hidden = message.on_path === false; // a version not shown (static/chat/versions.js)
    const retry = item.querySelector("[data-retry]");
    if (retry) retry.action = retry.getAttribute("action").replace("MESSAGE_ID", message.id);
    item.dataset.content = message.content;
    item.querySelector("[data-body]").replaceChildren(renderMarkdown(message.content));
    showTime(item.querySelector("[data-time]"), message.created_at);
    if (message.role === "user") this.showAuthor(item, message.author);
    this.setStatus(item, message.status, message.error);
    if (message.status === "streaming") this.texts.set(message.id, message.content);
    if (message.role === "assistant") this.showSteps(item, message.parts);
    return item;
  }

  /** Name a user message's author unless it is the reader's own (or from before authors were kept). */
  showAuthor(item, author) {
    const others = Boolean(author) && String(author.id) !== this.personId;
    item.classList.toggle("message--others", others);
    const name = item.querySelector("[data-author]");
    name.textContent = others ? author.name : "";
    name.hidden = !others;
    item.querySelector("h2").textContent = `${others ? author.name : "You"} said`;
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
    if (this.parts.has(id)) foldText(this.parts.get(id), text);
    this.dirty.add(id);
    this.renderTimer ??= setTimeout(() => this.renderDirty(), RENDER_DELAY_MS);
    return true;
  }

  end(id, status, error) {
    const item = this.find(id);
    if (!item) return false;
    this.renderDirty();
    if (this.texts.has(id)) item.dataset.content = this.texts.get(id);
    this.texts.delete(id);
    this.keepPinned(() => {
      this.setStatus(item, status, error);
      if (this.parts.has(id)) this.drawSteps(item); // approval cards left are answered no more
    });
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
    this.parts.clear();
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
    const replies = [...template.content.querySelectorAll('[data-role="assistant"]')];
    this.list.prepend(template.content);
    for (const item of replies) this.showSteps(item);
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
    item.dataset.content = content;
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

  /** Return whether the reader is at (or near) the bottom, following the conversation. */
  pinned() {
    const root = document.documentElement;
    return root.scrollHeight - (window.scrollY + window.innerHeight) < PINNED_PX;
  }

  /** Run a change to the list; follow the newest text if the reader was at the bottom (or `force`). */
  keepPinned(change, force = false) {
    const pinned = force || this.pinned();
    const height = document.documentElement.scrollHeight;
    change();
    if (pinned) this.scrollToEnd();
    else if (document.documentElement.scrollHeight > height) this.onUnseen();
  }
}
