// The AI SDK's own Chat (AbstractChat, as useChat drives it) regenerating and editing against a live
// chatsite: tests/test_aisdk.py starts the server and passes CHATSITE_URL and CHATSITE_TOKEN.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AbstractChat, DefaultChatTransport } from 'ai';

const base = process.env.CHATSITE_URL;
const headers = { Authorization: `Bearer ${process.env.CHATSITE_TOKEN}` };

// The state a UI framework gives AbstractChat (what @ai-sdk/react keeps in React state), as plain fields.
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

class Chat extends AbstractChat {
  constructor(options) {
    super({ ...options, state: new PlainState() });
  }
}

function newChat() {
  const chat = new Chat({
    id: crypto.randomUUID(),
    transport: new DefaultChatTransport({ api: `${base}/api/chat`, headers }),
  });
  return chat;
}

function textOf(message) {
  return message.parts.filter((part) => part.type === 'text').map((part) => part.text).join('');
}

// The thread as chatsite stored it: every version, and the active path.
async function stored(chat) {
  const response = await fetch(`${base}/api/threads/${chat.id}`, { headers });
  assert.equal(response.status, 200);
  const { messages } = await response.json();
  return { all: messages, path: messages.filter((message) => message.on_path) };
}

// What the Chat shows is the stored active path: the same ids, roles and texts.
async function assertShowsThePath(chat) {
  assert.equal(chat.status, 'ready', `the chat ended in ${chat.status}: ${chat.error}`);
  const { path } = await stored(chat);
  assert.deepEqual(
    chat.messages.map((message) => [message.role, textOf(message)]),
    path.map((message) => [message.role, message.content]),
  );
  const replies = chat.messages.filter((message) => message.role === 'assistant').map((message) => message.id);
  assert.deepEqual(replies, path.filter((message) => message.role === 'assistant').map((message) => message.id));
}

test('regenerate() after a complete reply writes a new version and keeps the first', async () => {
  const chat = newChat();
  await chat.sendMessage({ text: 'Hello' });
  const first = chat.messages.at(-1);
  assert.equal((await stored(chat)).path.at(-1).status, 'complete');

  await chat.regenerate();
  const again = chat.messages.at(-1);
  assert.notEqual(again.id, first.id);
  await assertShowsThePath(chat);
  const { all } = await stored(chat);
  const earlier = all.find((message) => message.id === first.id);
  assert.equal(earlier.on_path, false);
  assert.equal(earlier.parent_id, all.find((message) => message.id === again.id).parent_id);
});

test('regenerate({messageId}) of an earlier reply answers its question again', async () => {
  const chat = newChat();
  await chat.sendMessage({ text: 'First question' });
  await chat.sendMessage({ text: 'Second question' });
  const firstReply = chat.messages[1];
  await chat.regenerate({ messageId: firstReply.id });
  assert.equal(chat.messages.length, 2);
  assert.notEqual(chat.messages[1].id, firstReply.id);
  await assertShowsThePath(chat);
  assert.equal((await stored(chat)).all.length, 5, 'both exchanges are kept, with the new reply');
});

test('sendMessage({text, messageId}) edits a question: a new version with a new reply', async () => {
  const chat = newChat();
  await chat.sendMessage({ text: 'What is a tree?' });
  const question = chat.messages[0];
  await chat.sendMessage({ text: 'What is a graph?', messageId: question.id });
  assert.equal(chat.messages.length, 2);
  await assertShowsThePath(chat);
  const { all, path } = await stored(chat);
  assert.equal(path[0].content, 'What is a graph?');
  assert.deepEqual(
    all.filter((message) => message.role === 'user').map((message) => [message.content, message.on_path]),
    [['What is a tree?', false], ['What is a graph?', true]],
  );
});

test('a repeated identical send, or edit, writes nothing', async () => {
  const chat = newChat();
  await chat.sendMessage({ text: 'Say it once' });
  const question = chat.messages[0];
  const reply = chat.messages[1];
  await chat.sendMessage({ text: 'Say it once', messageId: question.id });
  assert.equal(chat.messages.at(-1).id, reply.id, 'the first reply again, not a new one');
  assert.equal((await stored(chat)).all.length, 2);

  await chat.sendMessage({ text: 'Say it twice', messageId: question.id });
  const edited = chat.messages.at(-1);
  await chat.sendMessage({ text: 'Say it twice', messageId: question.id });
  assert.equal(chat.messages.at(-1).id, edited.id);
  assert.equal((await stored(chat)).all.length, 4);
  await assertShowsThePath(chat);
});
