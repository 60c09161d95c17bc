// The server's HTTP API, as the console calls it: every request carries the credentials the
// user entered (kept in sessionStorage), a 401 asks for them again, and an error answer is
// thrown as an ApiError holding the server's own message.

const AUTH_KEY = 'exawatch.authorization';

let askForCredentials = () => {};

/** An answer other than 2xx: the HTTP status and the server's message, unchanged. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The Authorization header value in use, or null. */
export function credentials() {
  return sessionStorage.getItem(AUTH_KEY);
}

/** Keeps `value` (a whole Authorization header value) for this tab; null forgets it. */
export function setCredentials(value) {
  if (value) sessionStorage.setItem(AUTH_KEY, value);
  else sessionStorage.removeItem(AUTH_KEY);
}

/** `Bearer <token>` or `Basic <base64(user:password)>` (UTF-8, as RFC 7617 recommends). */
export function authorization(scheme, token, user, password) {
  if (scheme === 'bearer') return `Bearer ${token.trim()}`;
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

/** Calls `handler(message)` whenever the server answers 401. */
export function onUnauthorized(handler) {
  askForCredentials = handler;
}

/**
 * fetch() with the credentials; throws ApiError on a non-2xx answer. `credentials: 'omit'`
 * keeps the browser's own login prompt away when a 401 carries `WWW-Authenticate: Basic`
 * (the Fetch standard prompts only for requests that include credentials); the
 * Authorization header set here is sent all the same.
 */
export async function request(path, options = {}) {
  const headers = new Headers(options.headers);
  const auth = credentials();
  if (auth) headers.set('Authorization', auth);
  const response = await fetch(path, { ...options, headers, credentials: 'omit' });
  if (response.ok) return response;
  const text = await response.text();
  const message = errorMessage(text) || `${response.status} ${response.statusText}`;
  if (response.status === 401) askForCredentials(message);
  throw new ApiError(response.status, message);
}

/** The message of an error body: `{error}` (SQL, analytics), `{errorType, error}` (Prometheus). */
function errorMessage(text) {
  try {
    const body = JSON.parse(text);
    if (body.errorType) return `${body.errorType}: ${body.error}`;
    if (body.error) return String(body.error);
  } catch {
    // Not JSON: the text is the message.
  }
  return text.trim();
}

async function getJson(path, params) {
  const query = params ? `?${new URLSearchParams(params)}` : '';
  return (await request(`${path}${query}`)).json();
}

async function postForm(path, params) {
  const response = await request(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(params),
  });
  return (await response.json()).data;
}

/** PromQL at one instant (Unix seconds; now if omitted): `{resultType, result}`. */
export function instantQuery(query, time) {
  return postForm('/api/v1/query', time === undefined ? { query } : { query, time });
}

/** PromQL over [start, end] (Unix seconds) every `step` seconds: `{resultType, result}`. */
export function rangeQuery(query, start, end, step) {
  return postForm('/api/v1/query_range', { query, start, end, step });
}

/** Label sets of the series matching `selector` in [start, end]. */
export async function series(selector, start, end) {
  return postForm('/api/v1/series', { 'match[]': selector, start, end });
}

/** Values of label `name` in [start, end]. */
export async function labelValues(name, start, end) {
  return (await getJson(`/api/v1/label/${encodeURIComponent(name)}/values`, { start, end })).data;
}

/** SQL: the result rows as objects, columns in the server's order. */
export async function sql(query) {
  const response = await request('/api/v1/sql', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ query }),
  });
  return response.json();
}

/** The server's own meters: `[{name, labels, value}]` from `/metrics`. */
export async function serverMetrics() {
  const text = await (await request('/metrics')).text();
  const samples = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[key] = value;
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** `/health`: version and a few figures. */
export function health() {
  return getJson('/health');
}

/** Analytics: anomaly events, newest first. Throws ApiError 404 where analytics is absent. */
export function anomalies(params) {
  return getJson('/api/v1/anomalies', params);
}

/** Analytics: the list of reports. */
export function reports() {
  return getJson('/api/v1/reports');
}

/** A report's HTML, fetched with the credentials. */
export async function reportHtml(url) {
  return (await request(url)).text();
}
