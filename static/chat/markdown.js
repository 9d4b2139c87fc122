// Markdown for the page: the same renderer, options and allow-list as the server's
// `markdown` filter (threads/templatetags/chat.py), so a reply reads the same while it
// streams and after a reload. tests/test_markdown_parity.py holds the two to the same HTML.
//
// markdown-it (the JavaScript original of the server's markdown-it-py) never emits raw
// HTML here; the allow-list below is a second wall, as nh3 is on the server. Both parse
// and sanitise inside an inert <template>: nothing in a message loads or runs.

import MarkdownIt from "../vendor/markdown-it/markdown-it.min.js";
import { decorateCodeBlocks } from "./code.js";

const parser = new MarkdownIt("commonmark", { html: false, breaks: true })
  .enable(["table", "strikethrough"])
  .disable("image");

const ALLOWED_TAGS = new Set([
  "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
  "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
]);
// Elements dropped with everything in them (so are SVG and MathML, as nh3 drops them); other
// unknown elements give way to their content.
const DROPPED_WITH_CONTENT = new Set(["script", "style"]);
const HTML_NAMESPACE = "http://www.w3.org/1999/xhtml";
const ALIGNMENTS = new Set(["text-align:left", "text-align:center", "text-align:right"]);
const LANGUAGE_CLASS = /^language-[A-Za-z0-9_+#.-]{1,32}$/;
const URL_SCHEMES = new Set(["http", "https", "mailto"]);
const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):/;

const hasSafeScheme = (url) => {
  // Only a URL with a scheme is checked; a relative one stays, as nh3 keeps it.
  const scheme = SCHEME.exec(url.trim());
  return !scheme || URL_SCHEMES.has(scheme[1].toLowerCase());
};

// Which attributes each tag keeps, and on what condition.
const ALLOWED_ATTRIBUTES = {
  a: { href: hasSafeScheme, title: () => true },
  code: { class: (value) => LANGUAGE_CLASS.test(value) },
  ol: { start: () => true },
  th: { style: (value) => ALIGNMENTS.has(value) },
  td: { style: (value) => ALIGNMENTS.has(value) },
};
// Every link opens in a new tab, without handing that tab this page or the referrer.
const LINK_ATTRIBUTES = { target: "_blank", rel: "noopener noreferrer nofollow" };

function sanitise(parent) {
  for (const node of [...parent.childNodes]) {
    if (node.nodeType === Node.TEXT_NODE) continue;
    if (node.nodeType !== Node.ELEMENT_NODE) {
      node.remove();
      continue;
    }
    const tag = node.localName;
    if (DROPPED_WITH_CONTENT.has(tag) || node.namespaceURI !== HTML_NAMESPACE) {
      node.remove();
      continue;
    }
    sanitise(node);
    if (!ALLOWED_TAGS.has(tag)) {
      node.replaceWith(...node.childNodes);
      continue;
    }
    const allowed = ALLOWED_ATTRIBUTES[tag] ?? {};
    for (const { name, value } of [...node.attributes]) {
      if (!Object.hasOwn(allowed, name) || !allowed[name](value)) node.removeAttribute(name);
    }
    if (tag === "a") {
      for (const [name, value] of Object.entries(LINK_ATTRIBUTES)) node.setAttribute(name, value);
    }
  }
}

function sanitised(html) {
  const template = document.createElement("template");
  template.innerHTML = html; // parsed inert: a template's content never loads or runs
  sanitise(template.content);
  return template;
}

/** Return `html` with only the allowed tags, attributes and URL schemes, as the server's nh3 wall does. */
export function sanitiseHTML(html) {
  return sanitised(html).innerHTML;
}

/** Return markdown `text` as sanitised HTML, exactly as the server's `markdown` filter does. */
export function markdownToHTML(text) {
  return sanitiseHTML(parser.render(text));
}

/** Render markdown `text` into a DocumentFragment of sanitised HTML, its code blocks labelled and highlighted. */
export function renderMarkdown(text) {
  const fragment = sanitised(parser.render(text)).content;
  decorateCodeBlocks(fragment);
  return fragment;
}
