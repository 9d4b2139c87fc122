// An agent reply's steps, drawn from its parts (streaming/parts.py, protocol.py `Part`): thinking
// collapsed under a summary, each tool call as a card with its input and result, and an approval
// card with Approve / Deny while the reply waits for one. The reply's text is drawn apart, as
// markdown, from its `content`; text parts only keep the indexes of the others in step.

/** Fold a part event (`part_start`, `part_delta`, `part_end`) into `parts`, as the server folds them. */
export function foldPart(parts, event) {
  if (event.type === "part_delta") {
    parts[event.index].text += event.text;
  } else if (event.index === parts.length) {
    parts.push(event.part);
  } else {
    parts[event.index] = event.part;
  }
}

/** Fold a `delta`'s text into `parts`: it extends the last part if that is text, else opens a text part. */
export function foldText(parts, text) {
  const last = parts.at(-1);
  if (last?.type === "text") last.text += text;
  else parts.push({ type: "text", text });
}

/**
 * Replace the contents of `container` with the steps of `parts`; `waiting` says the reply still runs,
 * `deciding(tool call id)` whether a decision on that call is on its way (its buttons stay disabled).
 */
export function renderSteps(container, parts, waiting, deciding = () => false) {
  const results = new Map(parts.filter((part) => part.type === "tool_result").map((part) => [part.tool_call_id, part]));
  const approvals = new Map(parts.filter((part) => part.type === "approval").map((part) => [part.tool_call_id, part]));
  const steps = [];
  for (const part of parts) {
    if (part.type === "thinking") steps.push(thinking(part));
    else if (part.type === "tool_call") {
      const answerable = waiting && !deciding(part.id);
      steps.push(toolCard(part, results.get(part.id), approvals.get(part.id), answerable));
    }
  }
  container.replaceChildren(...steps);
  container.hidden = steps.length === 0;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // text, never markup: a part holds what a model or tool wrote
  return node;
}

function thinking(part) {
  const details = element("details", "step step--thinking");
  details.append(element("summary", "step__summary", "Thinking"), element("div", "step__text", part.text));
  return details;
}

function shown(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function toolCard(call, result, approval, answerable) {
  const card = element("section", "step step--tool");
  card.dataset.toolCallId = call.id;
  const state = result ? (result.is_error ? "failed" : "done") : approval?.state === "requested" ? "waiting" : "running";
  card.dataset.state = state;
  const heading = element("header", "step__summary");
  heading.append("Tool ", element("code", "", call.name), " ", element("span", "step__state", STATES[state]));
  card.append(heading, element("pre", "step__input", shown(call.input)));
  if (result) card.append(element("pre", "step__output", shown(result.output)));
  if (approval) card.append(approvalCard(approval, answerable));
  return card;
}

const STATES = { done: "done", failed: "failed", waiting: "waiting for approval", running: "running…" };

function approvalCard(approval, answerable) {
  const box = element("div", "step__approval");
  box.dataset.approvalState = approval.state;
  if (approval.state !== "requested") {
    box.textContent = approval.state === "approved" ? "Approved" : "Denied";
    return box;
  }
  box.append(
    element(
      "span",
      "",
      approval.retry ? "This call may have run already. Run it again?" : "Run this tool?",
    ),
  );
  for (const [approved, label] of [[true, "Approve"], [false, "Deny"]]) {
    const button = element("button", `button button--small${approved ? " button--primary" : ""}`, label);
    button.type = "button";
    button.dataset.approve = String(approved);
    button.dataset.toolCallId = approval.tool_call_id;
    button.disabled = !answerable;
    box.append(button);
  }
  return box;
}
