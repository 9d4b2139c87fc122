// The thread page's live client: applies protocol v1 events by seq and resumes from its cursor.
const root = document.querySelector("[data-thread-id]");
const list = root.querySelector("[data-messages]");
const composer = root.querySelector("[data-composer]");
const stopButton = root.querySelector("[data-stop]");
const sendButton = root.querySelector("[data-send]");
const connection = root.querySelector("[data-connection]");

let cursor = Number(root.dataset.seq);
let socket = null;
let attempt = 0;

function messageElement(message) {
  const item = document.createElement("li");
  item.className = `message message--${message.role}`;
  item.dataset.messageId = message.id;
  item.dataset.role = message.role;
  const body = document.createElement("div");
  body.className = "message__body";
  body.textContent = message.content;
  item.append(body);
  setStatus(item, message.status, message.error);
  return item;
}

function setStatus(item, status, error) {
  item.dataset.status = status;
  item.setAttribute("aria-busy", String(status === "streaming"));
  item.querySelector(".message__error")?.remove();
  if (error) {
    const note = document.createElement("p");
    note.className = "message__error";
    note.textContent = error.detail;
    item.append(note);
  }
}

function findMessage(id) {
  return list.querySelector(`[data-message-id="${CSS.escape(id)}"]`);
}

function refreshControls() {
  const streaming = Boolean(list.querySelector('[data-status="streaming"]'));
  stopButton.hidden = !streaming;
  sendButton.disabled = streaming;
}

function apply(event) {
  if (event.type === "message" || event.type === "start") {
    if (!findMessage(event.message.id)) list.append(messageElement(event.message));
  } else if (event.type === "delta") {
    findMessage(event.message_id).querySelector(".message__body").append(event.text);
  } else if (event.type === "end") {
    setStatus(findMessage(event.message_id), event.status, event.error);
  }
}

function resetTo(snapshot) {
  list.replaceChildren(...snapshot.messages.map(messageElement));
  cursor = snapshot.seq;
}

function onFrame(frame) {
  if (frame.type === "reset") {
    resetTo(frame);
  } else if (frame.type === "ready") {
    connection.textContent = "Connected";
    attempt = 0;
  } else if (frame.type === "error") {
    connection.textContent = frame.detail;
  } else if ("seq" in frame) {
    if (frame.seq <= cursor) return; // already applied
    if (frame.seq !== cursor + 1) {
      socket.close(); // a gap: reconnect from the cursor and let the server fill it
      return;
    }
    apply(frame);
    cursor = frame.seq;
  }
  refreshControls();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws/threads/${root.dataset.threadId}/?after=${cursor}`);
  socket.addEventListener("message", (message) => onFrame(JSON.parse(message.data)));
  socket.addEventListener("close", (close) => {
    if ([4401, 4403, 4404].includes(close.code)) {
      connection.textContent = "This thread is not available.";
      return;
    }
    const delay = Math.min(30_000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
    attempt += 1;
    connection.textContent = `Reconnecting in ${Math.ceil(delay / 1000)}s…`;
    setTimeout(connect, delay);
  });
}

function send(frame) {
  if (socket?.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify(frame));
    return true;
  }
  connection.textContent = "Not connected yet; try again in a moment.";
  return false;
}

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const content = composer.elements.content.value;
  if (!content.trim()) return;
  if (send({ type: "send", content, client_id: crypto.randomUUID() })) composer.reset();
});
composer.elements.content.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    composer.requestSubmit();
  }
});
stopButton.addEventListener("click", () => send({ type: "cancel" }));

refreshControls();
connect();
