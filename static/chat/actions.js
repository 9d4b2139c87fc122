// A thread's actions on the list and thread pages: archive or unarchive (posted as the page
// script, so the page updates in place), and delete after a confirmation dialog. Without
// JavaScript the same forms and links work as plain posts and a confirmation page.

import { postFields, postForm } from "./http.js";

/**
 * Wire every [data-archive] form and [data-delete] link under `root`.
 * @param {object} handlers
 * @param {(form: HTMLFormElement, answer: {id: string, archived: boolean}) => void} handlers.archived
 * @param {(link: HTMLAnchorElement) => void} handlers.deleted
 */
export function setUpThreadActions(root, { archived, deleted }) {
  const dialog = document.querySelector("[data-delete-dialog]");
  const error = dialog.querySelector("[data-delete-error]");
  let target = null; // the [data-delete] link the dialog asks about

  root.addEventListener("submit", async (event) => {
    const form = event.target.closest("[data-archive]");
    if (!form) return;
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      archived(form, await postForm(form));
    } catch {
      form.submit(); // let the server answer the plain post instead
    } finally {
      button.disabled = false;
    }
  });

  // An open ⋯ menu closes when the person clicks elsewhere, as menus do.
  document.addEventListener("click", (event) => {
    for (const menu of document.querySelectorAll("details[data-menu][open]")) {
      if (!menu.contains(event.target)) menu.removeAttribute("open");
    }
  });

  root.addEventListener("click", (event) => {
    const link = event.target.closest("[data-delete]");
    if (!link) return;
    event.preventDefault();
    target = link;
    link.closest("details")?.removeAttribute("open");
    dialog.querySelector("[data-delete-title]").textContent = link.dataset.title || "Untitled";
    error.hidden = true;
    dialog.returnValue = ""; // Esc closes without setting it: a stale "delete" must not count
    dialog.showModal();
  });

  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "delete" || !target) return;
    const link = target;
    try {
      await postFields(link.href, {});
      deleted(link);
    } catch (failure) {
      error.textContent = `Not deleted: ${failure.message}`;
      error.hidden = false;
      dialog.returnValue = "";
      dialog.showModal();
    }
  });
}
