// The seed S2 design's client under the AI SDK's own Chat: a custom transport that POSTs the seed body to
// /api/chat and reads GET /api/chat/stream?id= by its `data:` lines, as the seed documents them.
// tests/test_aisdk.py starts the server and passes CHATSITE_URL and CHATSITE_TOKEN.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AbstractChat } from 'ai';

const base = process.env.CHATSITE_URL;
const headers = { Authorization: `Bearer ${process.env.CHATSITE_TOKEN}`, 'Content-Type': 'application/json' };

// The chunks of a `data:` event stream, as the seed's reader takes them: one JSON object per `data:` line, to [DONE].
function dataRecords(body) {
  let buffer = '';
  return body.pipeThrough(new TextDecoderStream()).pipeThrough(
    new TransformStream({
      transform(text, controller) {
        buffer += text;
        const records = buffer.split('\n\n');
        buffer = records.pop();
        for (const record of records) {
          const data = record.split('\n').find((line) => line.startsWith('data: '))?.slice(6);
          if (data && data !== '[DONE]') controller.enqueue(JSON.parse(data));
        }
      },
    }),
  );
}

class SeedTransport {
  async sendMessages({ chatId, messages, abortSignal }) {
    const text = messages.at(-1).parts.map((part) => part.text ?? '').join('');
    const posted = await fetch(`${base}/api/chat`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ id: chatId, message: { role: 'user', content: text } }),
      signal: abortSignal,
    });
    assert.equal(posted.status, 200);
    const { streamId } = await posted.json();
    assert.equal(posted.headers.get('x-stream-id'), streamId);
    const stream = await fetch(`${base}/api/chat/stream?id=${chatId}`, { headers, signal: abortSignal });
    assert.equal(stream.status, 200);
    return dataRecords(stream.body);
  }

  async reconnectToStream() {
    return null;
  }
}

class PlainState {
  constructor() {
    this.messages = [];
    this.status = 'ready';
    this.error = undefined;
  }
  pushMessage(message) {
    this.messages = this.messages.concat(message);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  }
  snapshot(value) {
    return structuredClone(value);
  }
}

test('a custom transport reading /api/chat/stream rebuilds the stored reply in the AI SDK Chat', async () => {
  const chat = new (class extends AbstractChat {})({
    id: crypto.randomUUID(),
    transport: new SeedTransport(),
    state: new PlainState(),
  });
  await chat.sendMessage({ text: 'Hello from the seed client' });
  assert.equal(chat.status, 'ready', `the chat ended in ${chat.status}: ${chat.error}`);
  const response = await fetch(`${base}/api/threads/${chat.id}`, { headers });
  const reply = (await response.json()).messages.at(-1);
  assert.equal(reply.status, 'complete');
  const shown = chat.messages.at(-1);
  assert.equal(shown.id, reply.id);
  assert.ok(reply.content.length > 0);
  assert.equal(shown.parts.filter((part) => part.type === 'text').map((part) => part.text).join(''), reply.content);
});
