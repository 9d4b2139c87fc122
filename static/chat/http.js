// fetch() helpers for the page's own endpoints: JSON answers, Django's CSRF check, one error shape.

/** The CSRF token the page was rendered with (every signed-in page has a form carrying it). */
function csrfToken() {
  return document.querySelector("input[name=csrfmiddlewaretoken]")?.value ?? "";
}

async function answer(response) {
  const body = await response.json().catch(() => null);
  if (response.ok) return body;
  const detail = body?.error?.detail ?? `The server answered ${response.status}.`;
  throw Object.assign(new Error(detail), { code: body?.error?.code ?? "bad_request", status: response.status });
}

/** Post a page form as the page script: the view answers JSON instead of redirecting. */
export async function postForm(form) {
  const response = await fetch(form.action, {
    method: "POST",
    body: new FormData(form),
    headers: { Accept: "application/json" },
    credentials: "same-origin",
  });
  return answer(response);
}

/** Post form fields (not JSON) to a page endpoint as the page script. */
export async function postFields(url, fields) {
  const body = new FormData();
  body.append("csrfmiddlewaretoken", csrfToken());
  for (const [name, value] of Object.entries(fields)) body.append(name, value);
  const response = await fetch(url, {
    method: "POST",
    body,
    headers: { Accept: "application/json" },
    credentials: "same-origin",
  });
  return answer(response);
}

export async function postJSON(url, body = {}) {
  const response = await fetch(url, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    credentials: "same-origin",
  });
  return answer(response);
}

/** Send a JSON request with any method (PATCH, DELETE…) as the page script; 204 answers null. */
export async function sendJSON(method, url, body = undefined) {
  const response = await fetch(url, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
    headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    credentials: "same-origin",
  });
  return response.status === 204 ? null : answer(response);
}

export async function getJSON(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  return answer(response);
}
