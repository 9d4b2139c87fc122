// The Vercel AI SDK's own client (DefaultChatTransport and readUIMessageStream) against a live
// chatsite: tests/test_aisdk.py starts the server and passes CHATSITE_URL and CHATSITE_TOKEN.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DefaultChatTransport, readUIMessageStream } from 'ai';

const base = process.env.CHATSITE_URL;
const headers = { Authorization: `Bearer ${process.env.CHATSITE_TOKEN}` };
const transport = new DefaultChatTransport({ api: `${base}/api/chat`, headers });

function send(chatId, text, abortSignal) {
  const message = { id: `msg-${crypto.randomUUID()}`, role: 'user', parts: [{ type: 'text', text }] };
  return transport.sendMessages({ chatId, messages: [message], trigger: 'submit-message', messageId: undefined, abortSignal });
}

// The message the AI SDK rebuilds from a UI message stream: the last state readUIMessageStream yields.
async function finalMessage(stream) {
  let message;
  for await (message of readUIMessageStream({ stream, terminateOnError: true })) {
    // each state supersedes the one before
  }
  return message;
}

function textOf(message) {
  return message.parts.filter((part) => part.type === 'text').map((part) => part.text).join('');
}

// The reply as chatsite stored it, read back through the JSON API.
async function storedReply(chatId) {
  const response = await fetch(`${base}/api/threads/${chatId}`, { headers });
  assert.equal(response.status, 200);
  const snapshot = await response.json();
  return snapshot.messages.at(-1);
}

test('a sent message streams back as the stored reply', async () => {
  const chatId = crypto.randomUUID();
  const message = await finalMessage(await send(chatId, 'Hello from the AI SDK'));
  const reply = await storedReply(chatId);
  assert.equal(reply.status, 'complete');
  assert.equal(message.role, 'assistant');
  assert.equal(message.id, reply.id);
  assert.ok(reply.content.length > 0);
  assert.equal(textOf(message), reply.content);
});

test('a reply resumed mid-way through /api/chat/<id>/stream rebuilds the stored reply', async () => {
  const chatId = crypto.randomUUID();
  const dropped = new AbortController();
  const reader = (await send(chatId, 'Resume me please', dropped.signal)).getReader();
  let chunk;
  do {
    ({ value: chunk } = await reader.read());
  } while (chunk.type !== 'text-delta');
  dropped.abort(); // the client goes away mid-reply; the reply goes on without it

  const resumed = await transport.reconnectToStream({ chatId });
  assert.ok(resumed, 'the reply was still being written, so the server resumed it instead of answering 204');
  const message = await finalMessage(resumed);
  const reply = await storedReply(chatId);
  assert.equal(reply.status, 'complete');
  assert.equal(message.id, reply.id);
  assert.equal(textOf(message), reply.content);

  assert.equal(await transport.reconnectToStream({ chatId }), null, 'nothing to resume once the reply ended');
});
