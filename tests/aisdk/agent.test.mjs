// The `ai` package's own Chat (AbstractChat over DefaultChatTransport) against a live chatsite whose
// replies think and call tools: tests/test_aisdk_agent.py starts the server with a tool that needs approval.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AbstractChat, DefaultChatTransport, lastAssistantMessageIsCompleteWithApprovalResponses } from 'ai';

const base = process.env.CHATSITE_URL;
const headers = { Authorization: `Bearer ${process.env.CHATSITE_TOKEN}` };

// The chat state a UI framework keeps (React's useChat keeps it in React state): here, plain fields.
class MemoryState {
  status = 'ready';
  error = undefined;
  messages = [];

  pushMessage = (message) => {
    this.messages = [...this.messages, message];
  };

  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };

  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  };

  snapshot = (value) => structuredClone(value);
}

class Chat extends AbstractChat {
  constructor() {
    super({
      id: crypto.randomUUID(),
      transport: new DefaultChatTransport({ api: `${base}/api/chat`, headers }),
      state: new MemoryState(),
      sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
    });
  }
}

// The reply as chatsite stored it, read back through the JSON API: the parts a WebSocket tab folds.
async function storedReply(chatId) {
  const response = await fetch(`${base}/api/threads/${chatId}`, { headers });
  assert.equal(response.status, 200);
  return (await response.json()).messages.at(-1);
}

const toolPart = (message) => message.parts.find((part) => part.type === 'dynamic-tool');

// The thread's log events as a tab receives them: the event stream carries the WebSocket's frames.
async function loggedEvents(chatId) {
  const response = await fetch(`${base}/api/threads/${chatId}/events?after=0`, { headers });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const events = [];
  let buffer = '';
  while (!events.some((event) => event.type === 'end')) {
    const { value, done } = await reader.read();
    assert.ok(!done, 'the event stream ended before the reply did');
    buffer += value;
    const records = buffer.split('\n\n');
    buffer = records.pop();
    for (const record of records) {
      const data = record.split('\n').find((line) => line.startsWith('data: '));
      if (data) events.push(JSON.parse(data.slice('data: '.length)));
    }
  }
  await reader.cancel();
  return events;
}

// A tab's view of a reply: its events folded into parts, as the thread page folds them (static/chat/steps.js).
function tabParts(events, messageId) {
  const parts = [];
  for (const event of events.filter((event) => event.message_id === messageId)) {
    if (event.type === 'delta') {
      if (parts.at(-1)?.type === 'text') parts.at(-1).text += event.text;
      else parts.push({ type: 'text', text: event.text });
    } else if (event.type === 'part_delta') parts[event.index].text += event.text;
    else if (event.type === 'part_start' || event.type === 'part_end') parts[event.index] = event.part;
  }
  return parts;
}

// The parts as the AI SDK names them, from a tab's parts: a tool call and its result are one tool part.
function asUiParts(parts) {
  const results = new Map(parts.filter((part) => part.type === 'tool_result').map((part) => [part.tool_call_id, part]));
  return parts.flatMap((part) => {
    if (part.type === 'thinking') return [{ type: 'reasoning', text: part.text }];
    if (part.type === 'text') return [{ type: 'text', text: part.text }];
    if (part.type === 'tool_call') {
      return [{ type: 'dynamic-tool', toolCallId: part.id, toolName: part.name, input: part.input, output: results.get(part.id).output }];
    }
    return [];
  });
}

function simplified(message) {
  return message.parts.map((part) =>
    part.type === 'dynamic-tool'
      ? { type: part.type, toolCallId: part.toolCallId, toolName: part.toolName, input: part.input, output: part.output }
      : { type: part.type, text: part.text },
  );
}

// Wait, with a deadline, until `condition()` holds: the Chat sends an approval's answer in the background.
async function until(condition, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    assert.ok(Date.now() < deadline, `timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test('an agent reply shows the parts a tab shows, as stored', async () => {
  const chat = new Chat();
  await chat.sendMessage({ text: 'Compute.\n/think\n/tool calculator {"expression": "6 * 7"}' });
  assert.equal(chat.status, 'ready');
  const message = chat.messages.at(-1);
  assert.deepEqual(simplified(message), asUiParts(tabParts(await loggedEvents(chat.id), message.id)));
  const reply = await storedReply(chat.id);
  assert.equal(reply.status, 'complete');
  assert.equal(message.id, reply.id);
  // The scripted model thinks before each of its two calls: before the tool call, and before its text.
  assert.deepEqual(
    message.parts.map((part) => part.type),
    ['reasoning', 'dynamic-tool', 'reasoning', 'text'],
  );
  const [thinking, call, result, thinkingAgain, text] = reply.parts;
  assert.equal(message.parts[0].text, thinking.text);
  const tool = toolPart(message);
  assert.equal(tool.toolCallId, call.id);
  assert.equal(tool.toolName, 'calculator');
  assert.equal(tool.state, 'output-available');
  assert.deepEqual(tool.input, call.input);
  assert.deepEqual(tool.output, result.output);
  assert.equal(message.parts[2].text, thinkingAgain.text);
  assert.equal(message.parts[3].text, text.text);
});

for (const approved of [true, false]) {
  test(`a tool call waiting for approval is ${approved ? 'approved' : 'denied'} with addToolApprovalResponse`, async () => {
    const chat = new Chat();
    await chat.sendMessage({ text: 'Count.\n/tool guarded_counter {}' });
    const asked = toolPart(chat.messages.at(-1));
    assert.equal(asked.state, 'approval-requested');
    assert.equal((await storedReply(chat.id)).status, 'streaming', 'the reply waits, no worker holding it');

    // The answer goes out by itself (sendAutomaticallyWhen) and streams the rest of the reply.
    await chat.addToolApprovalResponse({ id: asked.approval.id, approved });
    await until(() => chat.status === 'ready' && toolPart(chat.messages.at(-1)).state.startsWith('output'), 'answered');
    const message = chat.messages.at(-1);
    const reply = await storedReply(chat.id);
    assert.equal(reply.status, 'complete');
    assert.equal(message.id, reply.id);
    const tool = toolPart(message);
    if (approved) {
      assert.equal(tool.state, 'output-available');
      assert.deepEqual(tool.output, { runs: 1 });
    } else {
      assert.equal(tool.state, 'output-denied');
    }
    const texts = message.parts.filter((part) => part.type === 'text').map((part) => part.text);
    assert.equal(texts.join(''), reply.content);
  });
}
