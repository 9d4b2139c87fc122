// A small markdown renderer for text that is still streaming in, safe by construction.
//
// It never parses HTML: every piece of text becomes a Text node, elements come from a
// fixed list of tag names, and the only attribute taken from the text (a link's href)
// must parse as an http(s) or mailto URL. It covers what the server's markdown-it
// renders for chat (paragraphs, line breaks, headings, lists, quotes, code, tables,
// emphasis, links), so a finished reply looks the same after a reload.

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const FENCE = /^ {0,3}(`{3,}|~{3,})/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const LIST_ITEM = /^ {0,3}([-*+]|(\d{1,9})[.)])[ \t]+(.*)$/;
const TABLE_DELIMITER = /^ *\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$/;
const ESCAPABLE = /[!-/:-@[-`{-~]/;

function el(tag, ...children) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

function safeHref(raw) {
  try {
    const url = new URL(raw, document.baseURI);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function link(text, href) {
  const anchor = el("a", ...inline(text));
  anchor.href = href;
  anchor.target = "_blank";
  anchor.rel = "noopener noreferrer nofollow";
  return anchor;
}

// Find the closing `marker` for one opened before `from`, as CommonMark would: not after
// whitespace, and for underscores not inside a word (snake_case stays text).
function closing(text, marker, from) {
  for (let at = text.indexOf(marker, from + 1); at !== -1; at = text.indexOf(marker, at + 1)) {
    const inWord = marker[0] === "_" && /\w/.test(text[at + marker.length] ?? "");
    if (!/\s/.test(text[at - 1]) && !inWord) return at;
  }
  return -1;
}

const EMPHASIS = [
  ["**", "strong"],
  ["__", "strong"],
  ["~~", "del"],
  ["*", "em"],
  ["_", "em"],
];

/** Return the inline nodes of one line or paragraph of text. */
export function inline(text) {
  const nodes = [];
  let plain = "";
  const flush = () => {
    if (plain) nodes.push(document.createTextNode(plain));
    plain = "";
  };
  let i = 0;
  while (i < text.length) {
    const char = text[i];
    if (char === "\\" && ESCAPABLE.test(text[i + 1] ?? "")) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (char === "`") {
      const ticks = /^`+/.exec(text.slice(i))[0];
      const end = text.indexOf(ticks, i + ticks.length);
      if (end !== -1) {
        flush();
        nodes.push(el("code", text.slice(i + ticks.length, end).replace(/^ (.+) $/, "$1")));
        i = end + ticks.length;
        continue;
      }
      plain += ticks;
      i += ticks.length;
      continue;
    }
    if (char === "[") {
      const match = /^\[([^\]]*)\]\(\s*<?([^\s()<>]*)>?(?:\s+"[^"]*")?\s*\)/.exec(text.slice(i));
      const href = match && safeHref(match[2]);
      if (href) {
        flush();
        nodes.push(link(match[1], href));
        i += match[0].length;
        continue;
      }
    }
    if (char === "<") {
      const match = /^<((?:https?|mailto):[^\s<>]+)>/i.exec(text.slice(i));
      const href = match && safeHref(match[1]);
      if (href) {
        flush();
        nodes.push(link(match[1], href));
        i += match[0].length;
        continue;
      }
    }
    const emphasis = EMPHASIS.find(([marker]) => text.startsWith(marker, i));
    if (emphasis) {
      const [marker, tag] = emphasis;
      const start = i + marker.length;
      const intraword = marker[0] === "_" && /\w/.test(text[i - 1] ?? "");
      const end = !intraword && /\S/.test(text[start] ?? "") ? closing(text, marker, start) : -1;
      if (end !== -1) {
        flush();
        nodes.push(el(tag, ...inline(text.slice(start, end))));
        i = end + marker.length;
        continue;
      }
      plain += marker;
      i += marker.length;
      continue;
    }
    plain += char;
    i += 1;
  }
  flush();
  return nodes;
}

// Lines joined by line breaks, as the server renders them (markdown-it with `breaks`).
function lines(texts) {
  const nodes = [];
  texts.forEach((text, index) => {
    if (index) nodes.push(el("br"), document.createTextNode("\n"));
    nodes.push(...inline(text.trim()));
  });
  return nodes;
}

function cells(row) {
  return row.trim().replace(/^\|/, "").replace(/\|$/, "").split("|").map((cell) => cell.trim());
}

function table(rows) {
  const head = el("thead", el("tr", ...cells(rows[0]).map((cell) => el("th", ...inline(cell)))));
  const body = el("tbody", ...rows.slice(2).map((row) => el("tr", ...cells(row).map((cell) => el("td", ...inline(cell))))));
  return el("table", head, body);
}

function startsBlock(line, next) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || LIST_ITEM.test(line)
    || (line.includes("|") && TABLE_DELIMITER.test(next ?? "") && next.includes("-"));
}

function list(source, at) {
  const first = LIST_ITEM.exec(source[at]);
  const ordered = first[2] !== undefined;
  const node = el(ordered ? "ol" : "ul");
  if (ordered && first[2] !== "1") node.start = Number(first[2]);
  let item = null;
  let i = at;
  while (i < source.length) {
    const line = source[i];
    const match = LIST_ITEM.exec(line);
    if (match && (match[2] !== undefined) === ordered) {
      item = [match[3]];
      node.append(el("li"));
    } else if (line.trim() && item && (/^\s/.test(line) || !startsBlock(line, source[i + 1]))) {
      item.push(line); // a continuation line of the item
    } else if (!line.trim() && LIST_ITEM.test(source[i + 1] ?? "")) {
      i += 1;
      continue;
    } else {
      break;
    }
    node.lastChild.replaceChildren(...lines(item));
    i += 1;
  }
  return [node, i];
}

/** Render markdown `text` into a DocumentFragment, escaping everything that is not markdown. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const source = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < source.length) {
    const line = source[i];
    let match;
    if (!line.trim()) {
      i += 1;
    } else if ((match = FENCE.exec(line))) {
      const fence = match[1];
      const body = [];
      i += 1;
      while (i < source.length && !source[i].trimStart().startsWith(fence)) body.push(source[i++]);
      i += 1;
      fragment.append(el("pre", el("code", body.length ? `${body.join("\n")}\n` : "")));
    } else if ((match = HEADING.exec(line))) {
      fragment.append(el(`h${match[1].length}`, ...inline(match[2] ?? "")));
      i += 1;
    } else if (RULE.test(line)) {
      fragment.append(el("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      while (i < source.length && QUOTE.test(source[i])) quoted.push(QUOTE.exec(source[i++])[1]);
      fragment.append(el("blockquote", renderMarkdown(quoted.join("\n"))));
    } else if (LIST_ITEM.test(line)) {
      const [node, next] = list(source, i);
      fragment.append(node);
      i = next;
    } else if (line.includes("|") && TABLE_DELIMITER.test(source[i + 1] ?? "") && source[i + 1].includes("-")) {
      const rows = [line, source[i + 1]];
      i += 2;
      while (i < source.length && source[i].includes("|") && source[i].trim()) rows.push(source[i++]);
      fragment.append(table(rows));
    } else {
      const paragraph = [line];
      i += 1;
      while (i < source.length && source[i].trim() && !startsBlock(source[i], source[i + 1])) paragraph.push(source[i++]);
      fragment.append(el("p", ...lines(paragraph)));
    }
  }
  return fragment;
}
