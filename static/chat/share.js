// The owner's share dialog on the thread page: add people as viewer or participant, change
// their role or remove them, make read-only links (each shown once) and revoke them. Every
// change goes through the JSON API (README "Sharing"), which cuts people off at once.

import { getJSON, postJSON, sendJSON } from "./http.js";

const root = document.querySelector("main[data-thread-id]");
const dialog = document.querySelector("[data-share-dialog]");
const members = dialog.querySelector("[data-share-members]");
const links = dialog.querySelector("[data-share-links]");
const error = dialog.querySelector("[data-share-error]");
const newLink = dialog.querySelector("[data-share-new-link]");
const newUrl = dialog.querySelector("[data-share-new-url]");

function showError(message) {
  error.textContent = message;
  error.hidden = !message;
}

/** Run an API call; show its refusal in the dialog, then redraw the lists. */
async function act(call) {
  showError("");
  try {
    await call();
  } catch (refused) {
    showError(refused.message);
  }
  await load();
}

function row(label, ...controls) {
  const item = document.createElement("li");
  item.className = "share__item";
  const name = document.createElement("span");
  name.className = "share__name";
  name.textContent = label;
  item.append(name, ...controls);
  return item;
}

function button(text, onClick, className = "button button--small") {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = text;
  element.addEventListener("click", onClick);
  return element;
}

function memberRow(member) {
  const url = `${root.dataset.membersUrl}/${member.user.id}`;
  const role = document.createElement("select");
  role.setAttribute("aria-label", `Role of ${member.user.name}`);
  for (const value of ["viewer", "participant"]) role.add(new Option(value[0].toUpperCase() + value.slice(1), value));
  role.value = member.role;
  role.addEventListener("change", () => act(() => sendJSON("PATCH", url, { role: role.value })));
  const remove = button("Remove", () => act(() => sendJSON("DELETE", url)), "button button--small button--quiet");
  remove.setAttribute("aria-label", `Remove ${member.user.name}`);
  return row(member.user.name, role, remove);
}

function linkRow(link) {
  const state = link.revoked_at ? "revoked" : link.expires_at && new Date(link.expires_at) < new Date() ? "expired" : "";
  const expiry = link.expires_at ? ` · until ${new Date(link.expires_at).toLocaleString()}` : "";
  const label = `${link.prefix}…${expiry}${state ? ` · ${state}` : ""}`;
  if (state) return row(label);
  const url = `${root.dataset.linksUrl}/${link.id}`;
  return row(label, button("Revoke", () => act(() => sendJSON("DELETE", url)), "button button--small button--danger"));
}

async function load() {
  const [people, made] = await Promise.all([getJSON(root.dataset.membersUrl), getJSON(root.dataset.linksUrl)]);
  members.replaceChildren(...people.members.map(memberRow));
  links.replaceChildren(...made.links.map(linkRow));
}

dialog.querySelector("[data-share-add]").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = event.target;
  act(async () => {
    await postJSON(root.dataset.membersUrl, { username: form.elements.username.value, role: form.elements.role.value });
    form.reset();
  });
});

dialog.querySelector("[data-share-link]").addEventListener("submit", (event) => {
  event.preventDefault();
  const expiry = event.target.elements.expires_in_seconds.value;
  act(async () => {
    const link = await postJSON(root.dataset.linksUrl, { expires_in_seconds: expiry ? Number(expiry) : null });
    newUrl.value = link.url;
    newLink.hidden = false;
    newUrl.select();
  });
});

document.querySelector("[data-share-open]").addEventListener("click", () => {
  newLink.hidden = true; // a link's token is shown once, in the dialog that made it
  newUrl.value = "";
  showError("");
  dialog.showModal();
  load().catch((failed) => showError(failed.message));
});
dialog.querySelector("[data-share-close]").addEventListener("click", () => dialog.close());
