// Code blocks of rendered messages: a bar with the block's language and a Copy button,
// and syntax highlighting, on replies rendered live and on those the server rendered.
//
// The bar's words are drawn by the stylesheet (markdown.css) from its attributes, so selecting
// and copying a whole reply copies the reply, not "python Copy" with it.

import hljs from "../vendor/highlight.js/highlight.min.js";

const LANGUAGE_PREFIX = "language-";
const COPIED_MS = 2000;
// A reply being written is rendered again every few tens of milliseconds: its finished
// blocks are highlighted once and taken from here, only the growing one is redone.
const highlights = new Map();
const HIGHLIGHTS_KEPT = 200;

function highlighted(code, language) {
  const key = `${language}\n${code}`;
  let html = highlights.get(key);
  if (html === undefined) {
    html = hljs.highlight(code, { language, ignoreIllegals: true }).value;
    if (highlights.size >= HIGHLIGHTS_KEPT) highlights.delete(highlights.keys().next().value);
  } else {
    highlights.delete(key); // kept as the most recently used
  }
  highlights.set(key, html);
  return html;
}

function languageOf(code) {
  const name = [...code.classList].find((name) => name.startsWith(LANGUAGE_PREFIX));
  return name ? name.slice(LANGUAGE_PREFIX.length) : "";
}

function copyButton() {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "code-block__copy";
  button.setAttribute("aria-label", "Copy code");
  return button;
}

/** Give every code block under `root` a bar with its language and a Copy button, and highlight it. */
export function decorateCodeBlocks(root) {
  for (const code of root.querySelectorAll("pre > code")) {
    const pre = code.parentElement;
    if (pre.parentElement?.classList.contains("code-block")) continue; // decorated already
    const language = languageOf(code);
    if (language && hljs.getLanguage(language)) {
      // highlight.js escapes the code it is given: its output is the same text, in spans.
      code.innerHTML = highlighted(code.textContent, language);
      code.classList.add("hljs");
    }
    const block = document.createElement("div");
    block.className = "code-block";
    const bar = document.createElement("div");
    bar.className = "code-block__bar";
    const label = document.createElement("span");
    label.className = "code-block__language";
    label.dataset.language = language || "text";
    bar.append(label, copyButton());
    pre.replaceWith(block);
    block.append(bar, pre);
  }
}

async function copy(button) {
  const code = button.closest(".code-block").querySelector("code");
  try {
    // Without the block's final newline: pasted into a terminal, a command waits for Enter.
    await navigator.clipboard.writeText(code.textContent.replace(/\n$/, ""));
  } catch {
    // No clipboard (an insecure origin, or permission refused): select the code to copy by hand.
    getSelection().selectAllChildren(code);
    return;
  }
  button.dataset.copied = "";
  button.setAttribute("aria-label", "Copied");
  clearTimeout(button.copiedTimer);
  button.copiedTimer = setTimeout(() => {
    delete button.dataset.copied;
    button.setAttribute("aria-label", "Copy code");
  }, COPIED_MS);
}

// One listener for every Copy button: replies being written replace their buttons as they grow.
document.addEventListener("click", (event) => {
  const button = event.target.closest?.(".code-block__copy");
  if (button) copy(button);
});
