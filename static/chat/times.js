// Relative times ("5 minutes ago") that stay current, with the exact local time on hover.
// The server renders both (in its own time zone); the page keeps them fresh and local.

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const exact = new Intl.DateTimeFormat(undefined, { dateStyle: "long", timeStyle: "short" });
const UNITS = [
  ["year", 365 * 24 * 3600],
  ["month", 30 * 24 * 3600],
  ["week", 7 * 24 * 3600],
  ["day", 24 * 3600],
  ["hour", 3600],
  ["minute", 60],
];
const REFRESH_MS = 30_000;

/** Return "just now", "5 minutes ago", "yesterday"… for an ISO time. */
export function ago(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  for (const [unit, size] of UNITS) {
    if (Math.abs(seconds) >= size) return relative.format(Math.round(seconds / size), unit);
  }
  return "just now";
}

/** Show `iso` in a <time>: relative text, machine-readable datetime, the exact local time as its title. */
export function showTime(element, iso) {
  if (!iso) return;
  element.dateTime = iso;
  element.textContent = ago(iso);
  element.title = exact.format(new Date(iso));
}

/** Keep every <time> matching `selector` under `root` current, now and every half minute. */
export function keepTimesFresh(root, selector) {
  const refresh = () => {
    for (const element of root.querySelectorAll(selector)) showTime(element, element.getAttribute("datetime"));
  };
  refresh();
  setInterval(refresh, REFRESH_MS);
}
