// The thread page's live client (WebSocket protocol v1, DESIGN.md §4).
//
// The page is a snapshot at `data-seq`; the client connects with `after=<that seq>` and
// applies log events strictly in seq order: a duplicate is dropped, a gap is never
// rendered (it reconnects from its cursor and the server fills the gap), and a `reset`
// replaces everything. So a reconnect, from any tab, resumes exactly where it stopped.
//
// A new chat is a draft (`data-draft`): its id is not saved until the first message is
// posted to the page's start endpoint; then the page becomes that thread's page in place.

import { setUpThreadActions } from "./actions.js";
import { ComposerLimit } from "./composer.js";
import { keepFollowing } from "./follow.js";
import { getJSON, postFields, postForm, postJSON, sendJSON } from "./http.js";
import { MessageList } from "./messages.js";
import { CloseCode, ErrorCode } from "./protocol.js";
import { setUpSidebar } from "./sidebar.js";
import { ThreadSocket } from "./socket.js";
import { ConnectionStatus } from "./status.js";
import { setUpTitle } from "./title.js";
import { Versions } from "./versions.js";

const root = document.querySelector("main[data-thread-id]");
const view = new MessageList(root);
const connection = new ConnectionStatus(root.querySelector("[data-connection]"));
const composer = root.querySelector("[data-composer]");
const textarea = composer.elements.content;
const limit = new ComposerLimit(textarea, root.querySelector("[data-count]"));
const sendButton = composer.querySelector("[data-send]");
const stopButton = composer.querySelector("[data-stop]");
const notice = root.querySelector("[data-notice]");
const jump = root.querySelector("[data-jump]");
const sidebar = setUpSidebar(document.querySelector("[data-app]"));
const title = setUpTitle(root, showNotice, (saved) => sidebar.renamed(root.dataset.threadId, saved));
const versions = new Versions(view, {
  apiUrl: `/api/threads/${root.dataset.threadId}`,
  newClientId,
  replied: (reply) => ownReplies.add(reply.id),
  refused: (error) => showNotice(error.code === "busy" ? busyExplained() : error.message, error.code),
  partial: () => Boolean(root.querySelector("[data-earlier-wrap]")),
  missing: () => resync(),
});

// What a refused send says, by whose reply is still being written.
const BUSY_OWN = "The reply is still being written. Wait for the reply to finish or stop it (Esc).";
const BUSY_ELSEWHERE =
  "A reply started in another tab or on another device is still being written. Wait for it to finish or stop it (Esc), then send again.";
const BUSY_UNSEEN =
  "A reply is still being written, perhaps from another tab. Wait for it to finish, or press Stop (Esc), then send again.";
const OFFLINE = "Couldn’t reach the server, so nothing was sent. Check your connection and send again.";
// Snapshots read before giving up and reloading the page, should each be behind the log.
const RESYNC_ATTEMPTS = 3;
// Errors a refused send can cause; its text goes back into the composer.
const SEND_ERRORS = new Set(["busy", "too_long", "bad_request", "rate_limited", "forbidden"]);

let draft = root.hasAttribute("data-draft"); // a new chat, not saved yet
let cursor = Number(root.dataset.seq); // seq of the last event applied
let caughtUp = false; // `ready` seen on the current socket
let lostConnection = false; // a socket was lost since the last `ready`
let closed = false; // the server refused us for good (signed out, no such thread)
// Frames a socket can lose as it dies, kept until the log shows them; `ready` sends them again.
let pending = null; // {content, client_id, element}: a send not yet confirmed by its `message` event
let stopping = null; // id of the reply a Stop was asked for, until it ends
const deciding = new Map(); // tool call id → approved: a decision not yet in the log
const ownReplies = new Set(); // ids of the replies this tab asked for (sent or retried here)
let ownReplyNext = false; // this tab's message was confirmed: the next reply to start answers it

const socket = new ThreadSocket({
  url: () => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // With presence=1 the server also sends who is watching the thread now (`presence` frames).
    return `${scheme}://${location.host}/ws/threads/${root.dataset.threadId}/?after=${cursor}&presence=1`;
  },
  onFrame,
  onState,
});

function advance(seq) {
  cursor = seq;
  root.dataset.seq = String(seq);
}

function onFrame(frame) {
  if (frame.type === "ready") {
    caughtUp = true;
    socket.caughtUp();
    connection.connected(lostConnection);
    lostConnection = false;
    // What the last socket may have lost: a send (its client_id makes it safe to repeat), a Stop (a
    // cancel is), a decision (sent only while its approval is still requested, as the backlog shows).
    sendPending();
    sendStop();
    sendDecisions();
  } else if (frame.type === "reset") {
    view.reset(frame.messages);
    versions.refresh();
    sidebar.replying(root.dataset.threadId, Boolean(view.streaming()));
    offerEarlier(frame.next); // a reset holds the newest messages that fit one frame; `next` says more exist
    advance(frame.seq);
    if (pending && frame.messages.some((message) => message.client_id === pending.client_id)) {
      pending = null;
      const replying = view.streaming();
      if (replying) ownReplies.add(replying.dataset.messageId);
    } else if (pending) view.keepPending(pending.element); // still unconfirmed: `ready` sends it again
  } else if (frame.type === "error") {
    onError(frame);
  } else if (frame.type === "thread") {
    title.renamed(frame.title); // renamed in another tab or by another client
  } else if (frame.type === "presence") {
    showPresence(frame.people);
  } else if (Number.isInteger(frame.seq)) {
    onLogEvent(frame);
  }
  refreshControls();
}

function onLogEvent(event) {
  if (event.seq <= cursor) return; // already applied: a replay after reconnecting
  if (event.seq !== cursor + 1) {
    socket.restart("gap"); // never render a gap: the server resends from our cursor
    return;
  }
  apply(event);
  advance(event.seq);
  if (event.type === "start" || event.type === "end") sidebar.replying(root.dataset.threadId, Boolean(view.streaming()));
}

function apply(event) {
  if (event.type === "message") {
    const confirms = pending && event.message.client_id === pending.client_id;
    view.add(event.message, confirms ? pending.element : null);
    versions.added(event.message);
    if (confirms) {
      pending = null;
      ownReplyNext = true;
    }
    title.refreshIfUntitled();
  } else if (event.type === "start") {
    if (ownReplyNext) ownReplies.add(event.message.id);
    ownReplyNext = false;
    view.add(event.message);
    versions.added(event.message);
  } else if (event.type === "switch") {
    versions.switched(event);
  } else if (event.type === "delta") {
    view.appendText(event.message_id, event.text);
  } else if (event.type.startsWith("part_")) {
    if (event.type === "part_end" && event.part.type === "approval") deciding.delete(event.part.tool_call_id);
    view.applyPart(event);
  } else if (event.type === "end") {
    if (event.message_id === stopping) stopping = null;
    view.end(event.message_id, event.status, event.error);
    if (notice.dataset.code === "busy") hideNotice(); // the reply it was about has ended
  }
}

/**
 * Replace the messages shown with a fresh snapshot, as a `reset` does: the active path moved to
 * versions older than the page holds. A snapshot behind the events already applied is read again.
 */
async function resync() {
  for (let attempt = 0; attempt < RESYNC_ATTEMPTS; attempt += 1) {
    let snapshot;
    try {
      snapshot = await getJSON(`/api/threads/${root.dataset.threadId}`);
    } catch (error) {
      showNotice(error.message);
      return;
    }
    if (snapshot.seq >= cursor) {
      onFrame({ type: "reset", seq: snapshot.seq, messages: snapshot.messages, next: snapshot.next });
      return;
    }
  }
  location.reload();
}

/** Return what to say when a send is refused because a reply is still being written. */
function busyExplained() {
  const replying = view.streaming();
  if (!replying) return BUSY_UNSEEN;
  return ownReplies.has(replying.dataset.messageId) ? BUSY_OWN : BUSY_ELSEWHERE;
}

function refuseSend(code, detail) {
  if (pending) {
    if (!textarea.value) textarea.value = pending.content;
    view.removePending(pending.element);
    pending = null;
    autosize();
    limit.update();
  }
  showNotice(code === "busy" ? busyExplained() : detail, code);
}

function onError(frame) {
  if (frame.code === "forbidden") becomeReadOnly(); // the owner made this person a viewer
  if (pending && SEND_ERRORS.has(frame.code)) {
    refuseSend(frame.code, frame.detail);
    return;
  }
  if (frame.code === ErrorCode.NOT_RUNNING) return; // a Stop that arrived just after the reply ended
  if (frame.code === ErrorCode.NO_APPROVAL_PENDING && deciding.size) {
    // The answer does not say to which decision: give every card waiting on one its buttons back.
    refuseDecisions([...deciding.keys()], frame.detail, frame.code);
    return;
  }
  showNotice(frame.code === "busy" ? busyExplained() : frame.detail, frame.code);
}

function onState(state, detail) {
  caughtUp = false;
  if (state === "connecting") {
    connection.show("connecting", lostConnection ? "Reconnecting…" : "Connecting…");
  } else if (state === "reconnecting") {
    lostConnection = true;
    connection.show("reconnecting", "Reconnecting", detail.retryAt);
  } else if (state === "offline") {
    lostConnection = true;
    connection.show("offline", "Offline: waiting for the network");
  } else if (state === "closed") {
    closed = true;
    connection.show("closed", detail.code === CloseCode.NOT_SIGNED_IN ? "Signed out" : "Not available");
    showNotice(
      detail.code === CloseCode.NOT_SIGNED_IN
        ? "You were signed out. Sign in again to keep chatting."
        : detail.code === CloseCode.NOT_ALLOWED
          ? "Your access to this chat ended: its owner stopped sharing it with you."
          : "This thread is no longer available.",
    );
    showPresence([]);
    if (detail.code === CloseCode.NOT_ALLOWED) root.querySelector("[data-read-only-note]").hidden = true;
    refreshControls();
  }
}

function refreshControls() {
  const replying = view.streaming();
  stopButton.hidden = !replying;
  stopButton.disabled = Boolean(replying) && stopping === replying.dataset.messageId;
  sendButton.disabled = Boolean(replying || pending) || closed;
  textarea.disabled = closed;
  root.querySelector("[data-hint-idle]").hidden = Boolean(replying);
  root.querySelector("[data-hint-busy]").hidden = !replying;
}

/** Show who else is watching the thread now (people, each once), by name. */
function showPresence(people) {
  const list = root.querySelector("[data-presence]");
  const others = people.filter((person) => String(person.id) !== root.dataset.personId);
  list.replaceChildren(
    ...others.map((person) => {
      const item = document.createElement("li");
      item.className = "presence__person";
      item.textContent = person.name.slice(0, 1).toUpperCase();
      item.title = `${person.name} is watching`;
      item.setAttribute("aria-label", item.title);
      return item;
    }),
  );
  list.hidden = others.length === 0;
}

// A member leaves a thread shared with them: it is gone from their list, and they go back to it.
root.querySelector("[data-leave]")?.addEventListener("click", async () => {
  try {
    await sendJSON("DELETE", `${root.dataset.membersUrl}/${root.dataset.personId}`);
    location.assign("/");
  } catch (error) {
    showNotice(error.message);
  }
});

/** Take the composer away: this person may read the thread but no longer write to it. */
function becomeReadOnly() {
  root.toggleAttribute("data-read-only", true);
  composer.hidden = true;
  root.querySelector(".composer__meta").hidden = true;
  root.querySelector("[data-read-only-note]").hidden = false;
}

function showNotice(text, code = "") {
  notice.textContent = text;
  notice.dataset.code = code;
  notice.hidden = false;
}

function hideNotice() {
  notice.hidden = true;
  notice.textContent = "";
  notice.dataset.code = "";
}

function sendPending() {
  if (pending && caughtUp) {
    socket.send({ type: "send", content: pending.content, client_id: pending.client_id });
  }
}

/** Ask again to stop the reply a Stop was pressed for, if it still streams: the server may never have heard. */
function sendStop() {
  if (!stopping || !caughtUp) return;
  if (view.streaming()?.dataset.messageId === stopping) socket.send({ type: "cancel" });
  else stopping = null; // it ended while the socket was down
}

/** Send again each decision whose approval the log still shows requested; forget the others. */
function sendDecisions() {
  if (!caughtUp) return;
  for (const [toolCallId, approved] of deciding) {
    if (view.approvalRequested(toolCallId)) socket.send({ type: "approve", tool_call_id: toolCallId, approved });
    else deciding.delete(toolCallId); // decided (here or elsewhere), or its reply ended
  }
}

/** Give the cards of refused decisions their Approve and Deny back, and say why. */
function refuseDecisions(toolCallIds, detail, code) {
  for (const toolCallId of toolCallIds) {
    deciding.delete(toolCallId);
    view.redrawToolCall(toolCallId);
  }
  showNotice(detail, code);
}

function submit() {
  const content = textarea.value;
  if (!content.trim() || closed) return;
  if (view.streaming() || pending) {
    showNotice(pending ? BUSY_OWN : busyExplained(), "busy");
    return;
  }
  const refusal = limit.refusal();
  if (refusal) {
    showNotice(refusal, "too_long");
    return;
  }
  hideNotice();
  pending = { content, client_id: newClientId(), element: view.addPending(content) };
  textarea.value = "";
  autosize();
  limit.update();
  if (draft) start();
  else sendPending(); // if not caught up, `ready` sends it
  refreshControls();
}

/** Save the new chat with its first message, then follow it like any thread. */
async function start() {
  let answer;
  try {
    answer = await postFields(composer.action, { content: pending.content, client_id: pending.client_id });
  } catch (error) {
    refuseSend(error.code, error.status ? error.message : OFFLINE);
    refreshControls();
    return;
  }
  draft = false;
  root.removeAttribute("data-draft");
  history.replaceState(null, "", answer.thread.url);
  title.renamed(answer.thread.title);
  sidebar.added(answer.thread);
  // The log from its start: the message (confirming the pending one by its client_id), then the reply.
  socket.start();
}

function stop() {
  const replying = view.streaming();
  if (!replying) return;
  stopping = replying.dataset.messageId;
  refreshControls();
  // Only an explicit Stop ends a reply; closing the socket never does (I5).
  if (socket.send({ type: "cancel" })) return;
  postJSON(root.dataset.cancelUrl).catch((error) => {
    if (error.code === ErrorCode.NOT_RUNNING) return; // the reply ended meanwhile
    if (!error.status) {
      sendStop(); // not answered: ask on the socket if it is back, else its `ready` will
      return;
    }
    stopping = null; // refused: Stop can be pressed again
    refreshControls();
    showNotice(error.message, error.code);
  });
}

/** Approve or deny a tool call the reply waits on; every tab's card shows the decision once it is logged. */
function approve(toolCallId, approved) {
  deciding.set(toolCallId, approved);
  if (socket.send({ type: "approve", tool_call_id: toolCallId, approved })) return;
  postJSON(root.dataset.approvalsUrl, { tool_call_id: toolCallId, approved }).catch((error) => {
    if (error.status) refuseDecisions([toolCallId], error.message, error.code); // else `ready` sends it again
  });
}

/** Return a send's idempotency key; crypto.randomUUID exists only in secure contexts (https, localhost). */
function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // A version 4 UUID from random bytes (the well-known RFC 4122 template trick).
  return "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (digit) =>
    (digit ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (digit / 4)))).toString(16),
  );
}

function autosize() {
  textarea.style.height = "auto";
  textarea.style.height = `${textarea.scrollHeight}px`;
}

/** Show the "earlier messages" control when earlier messages exist (`next` is not null), else remove it. */
function offerEarlier(next) {
  const shown = root.querySelector("[data-earlier-wrap]");
  if (next === null || next === undefined) shown?.remove();
  if (next === null || next === undefined || shown) return;
  const wrap = document.createElement("div");
  wrap.className = "earlier";
  wrap.dataset.earlierWrap = "";
  const button = document.createElement("button");
  Object.assign(button, { type: "button", className: "button button--small", textContent: "Show earlier messages" });
  button.dataset.url = root.dataset.earlierUrl;
  button.addEventListener("click", () => loadEarlier(button));
  wrap.append(button);
  view.list.before(wrap);
}

async function loadEarlier(button) {
  button.disabled = true;
  try {
    // No message shown (the newest alone did not fit a reset): page in from the newest.
    const url = `${button.dataset.url}?before=${encodeURIComponent(view.oldestId() ?? "")}`;
    const { html, has_more: hasMore } = await getJSON(url);
    let first = null;
    view.keepInPlace(() => {
      first = view.prepend(html);
      versions.refresh();
      if (!hasMore) button.closest("[data-earlier-wrap]").remove();
    });
    if (!hasMore && first) {
      first.setAttribute("tabindex", "-1");
      first.focus({ preventScroll: true }); // the button is gone: keep the keyboard's place
    }
  } catch (error) {
    showNotice(error.message);
  } finally {
    button.disabled = false;
  }
}

keepFollowing(view, root.querySelector("[data-dock]"), jump, textarea);

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  submit();
});
textarea.addEventListener("input", autosize);
textarea.addEventListener("keydown", (event) => {
  // isComposing: Enter also confirms a word in an input method (Japanese, Chinese, …).
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    submit();
  }
});
document.addEventListener("keydown", (event) => {
  // Esc in a dialog, the sidebar's search or a menu closes or clears that; it does not stop the reply.
  if (event.target.closest?.("dialog, [data-sidebar], [data-menu]")) return;
  if (event.key === "Escape" && view.streaming()) {
    event.preventDefault();
    stop();
  }
});
stopButton.addEventListener("click", stop);
view.onApprove = approve;
view.deciding = (toolCallId) => deciding.has(toolCallId);
root.querySelector("[data-earlier]")?.addEventListener("click", (event) => loadEarlier(event.currentTarget));
view.list.addEventListener("submit", async (event) => {
  const form = event.target.closest("[data-retry]");
  if (!form) return;
  event.preventDefault();
  hideNotice();
  form.querySelector("button").disabled = true;
  try {
    const { reply } = await postForm(form); // the new reply arrives as a `start` event, in every tab
    ownReplies.add(reply.id);
  } catch (error) {
    showNotice(error.code === "busy" ? busyExplained() : error.message, error.code);
  } finally {
    form.querySelector("button").disabled = false;
  }
});
setUpThreadActions(document.body, {
  archived(form, { archived }) {
    // Archived: it leaves the list, so go on to a new chat; brought back: show it as it is now.
    if (archived) location.assign(root.dataset.newUrl);
    else location.reload();
  },
  deleted() {
    location.assign(root.dataset.newUrl);
  },
});

refreshControls();
view.scrollToEnd();
if (!draft) socket.start();
