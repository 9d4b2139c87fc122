// Versions of messages on the thread page. A thread is a tree: each message follows its
// parent (data-parent-id), and an edited question or a regenerated reply is a sibling
// under the same parent. One version of each is shown, the active path; the others stay
// in the list, hidden, and the "‹ 2 / 3 ›" switcher under a message shows another one.
//
// The path follows the log: a new message goes on it after its parent, and a `switch`
// event puts the versions it names there. The list is in seq order and a child is always
// written after its parent, so "after the parent" is "after it in the list".

import { postJSON } from "./http.js";

export class Versions {
  /**
   * @param {MessageList} view the thread's message list
   * @param {object} options
   * @param {string} options.apiUrl the thread's JSON API URL (/api/threads/<id>)
   * @param {() => string} options.newClientId a fresh idempotency key for an edit
   * @param {(reply: object) => void} options.replied a reply this tab asked for was queued
   * @param {(error: Error) => void} options.refused the server refused an action
   * @param {() => boolean} options.partial whether earlier messages exist that the page does not hold
   * @param {() => void} options.missing the path names messages older than the page: it needs a fresh snapshot
   */
  constructor(view, { apiUrl, newClientId, replied, refused, partial, missing }) {
    Object.assign(this, { view, apiUrl, newClientId, replied, refused, partial, missing });
    view.list.addEventListener("click", (event) => {
      const step = event.target.closest("[data-version-step]");
      if (step) this.step(step.closest("[data-message-id]"), Number(step.dataset.versionStep));
      else if (event.target.closest("[data-edit]")) this.edit(event.target.closest("[data-message-id]"));
      else if (event.target.closest("[data-regenerate]")) this.regenerate(event.target.closest("[data-message-id]"));
    });
    this.refresh();
  }

  items() {
    return [...this.view.list.querySelectorAll(":scope > [data-message-id]")];
  }

  /** Show `ids` after the message `parentId` (from the start when null), hiding what followed it. */
  place(parentId, ids) {
    const items = this.items();
    // A parent not in the list is older than every message shown: all of them followed it.
    const start = parentId ? items.findIndex((item) => item.dataset.messageId === parentId) + 1 : 0;
    for (const item of items.slice(start)) item.hidden = true;
    const shown = ids.map((id) => this.view.find(id));
    for (const item of shown) if (item) item.hidden = false;
    this.refresh();
    // Messages the page does not hold are now shown, or versions of these may be among the earlier ones.
    if (shown.includes(null) || (start === 0 && this.partial())) this.missing();
  }

  /** A `message` or `start` event: the new message is the version shown. */
  added(message) {
    this.place(message.parent_id, [message.id]);
  }

  /** A `switch` event: another version was chosen, in this tab or elsewhere. */
  switched(event) {
    this.place(event.parent_id, event.path);
  }

  /**
   * Return the ids of a message's versions, oldest first: the messages of its role under its parent
   * that the page holds, with those older than the page that a snapshot named (data-version-ids).
   */
  versionIds(item) {
    const held = this.items().filter(
      (other) => other.dataset.parentId === item.dataset.parentId && other.dataset.role === item.dataset.role,
    );
    // The longest list a snapshot gave: versions are only ever added, so it holds the others.
    const named = held
      .map((other) => (other.dataset.versionIds ?? "").split(" ").filter(Boolean))
      .reduce((longest, ids) => (ids.length > longest.length ? ids : longest), []);
    // Those it does not name arrived since, so they are newer than all it names.
    const newer = held.map((other) => other.dataset.messageId).filter((id) => !named.includes(id));
    return [...named, ...newer];
  }

  /** Show each shown message's switcher ("‹ 2 / 3 ›") when it has other versions. */
  refresh() {
    for (const item of this.items()) {
      if (item.hidden) continue;
      const versions = this.versionIds(item);
      const index = versions.indexOf(item.dataset.messageId);
      const switcher = item.querySelector("[data-versions]");
      switcher.hidden = versions.length < 2;
      switcher.querySelector("[data-version-label]").textContent = `${index + 1} / ${versions.length}`;
      switcher.querySelector('[data-version-step="-1"]').disabled = index === 0;
      switcher.querySelector('[data-version-step="1"]').disabled = index === versions.length - 1;
    }
  }

  async act(path, body = {}) {
    try {
      return await postJSON(`${this.apiUrl}/${path}`, body);
    } catch (error) {
      this.refused(error);
      return null;
    }
  }

  /** Show the previous or next version; every tab follows by the `switch` event. */
  async step(item, by) {
    const versions = this.versionIds(item);
    const target = versions[versions.indexOf(item.dataset.messageId) + by];
    if (target) await this.act(`messages/${target}/switch`);
  }

  async regenerate(item) {
    const answer = await this.act(`replies/${item.dataset.messageId}/regenerate`);
    if (answer) this.replied(answer.reply);
  }

  /** Edit a question in place: Enter sends it as a new version, Esc (or Cancel) leaves it as it was. */
  edit(item) {
    if (item.querySelector("[data-editor]")) return;
    const body = item.querySelector("[data-body]");
    const editor = document.createElement("form");
    editor.className = "editor";
    editor.dataset.editor = "";
    const field = document.createElement("textarea");
    Object.assign(field, { className: "editor__field", value: this.view.source(item), rows: 1 });
    field.setAttribute("aria-label", "Edit message");
    const cancel = Object.assign(document.createElement("button"), {
      type: "button",
      className: "button button--small",
      textContent: "Cancel",
    });
    const send = Object.assign(document.createElement("button"), {
      type: "submit",
      className: "button button--small button--primary",
      textContent: "Send",
    });
    const buttons = document.createElement("div");
    buttons.className = "editor__buttons";
    buttons.append(cancel, send);
    editor.append(field, buttons);
    item.classList.add("message--editing");
    body.replaceWith(editor);

    const close = () => {
      item.classList.remove("message--editing");
      editor.replaceWith(body);
    };
    const fit = () => {
      field.style.height = "auto";
      field.style.height = `${field.scrollHeight}px`;
    };
    cancel.addEventListener("click", close);
    field.addEventListener("input", fit);
    field.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation(); // Esc leaves the editor; it does not stop a reply
        close();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        editor.requestSubmit();
      }
    });
    editor.addEventListener("submit", async (event) => {
      event.preventDefault();
      const content = field.value;
      if (!content.trim()) return;
      if (content === this.view.source(item)) {
        close(); // nothing changed: no new version
        return;
      }
      send.disabled = true;
      const answer = await this.act(`messages/${item.dataset.messageId}/edit`, {
        content,
        client_id: this.newClientId(),
      });
      send.disabled = false;
      if (!answer) return; // refused: the editor stays open with the text
      close(); // the new version arrives as a `message` event, in every tab

      this.replied(answer.reply);
    });
    fit();
    field.focus();
    field.setSelectionRange(field.value.length, field.value.length);
  }
}
