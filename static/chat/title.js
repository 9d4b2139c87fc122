// The thread's title: renamed in place (the heading turns into a small form posted with
// fetch), picked up from the server once the first message has named the thread, and
// kept current when another tab or client renames it (the `thread` frame).

import { getJSON, postForm } from "./http.js";

/**
 * @param {HTMLElement} root  the thread page
 * @param {(text: string) => void} showNotice
 * @param {(title: string) => void} onShown  told each title shown, to show it elsewhere too (the sidebar)
 */
export function setUpTitle(root, showNotice, onShown = () => {}) {
  const title = root.querySelector("[data-title]");
  const heading = title.querySelector("[data-title-text]");
  const edit = title.querySelector("[data-title-edit]");
  const form = title.querySelector("[data-title-form]");
  const input = form.elements.title;

  const show = (saved) => {
    heading.textContent = saved;
    input.defaultValue = saved;
    document.title = `${saved} · chatsite`;
    onShown(saved);
  };
  const editing = (on) => {
    form.hidden = !on;
    heading.hidden = on;
    edit.hidden = on;
  };
  const close = () => {
    editing(false);
    edit.focus();
  };

  edit.addEventListener("click", () => {
    input.value = input.defaultValue;
    editing(true);
    input.focus();
    input.select();
  });
  title.querySelector("[data-title-cancel]").addEventListener("click", close);
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.stopPropagation(); // Esc here cancels the rename; it must not also stop the reply
    close();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      show((await postForm(form)).title);
      close();
    } catch (error) {
      showNotice(error.message);
    }
  });

  return {
    /** The thread was renamed elsewhere: show the new title (a rename being typed here keeps its text). */
    renamed(saved) {
      if (saved && saved !== input.defaultValue) show(saved);
    },
    /** The first message names an untitled thread (on the server): fetch that name. */
    async refreshIfUntitled() {
      if (input.defaultValue) return;
      const snapshot = await getJSON(root.dataset.snapshotUrl).catch(() => null);
      if (snapshot?.title) show(snapshot.title);
    },
  };
}
