// Thin client for the qlearn HTTP API (docs/http-api.md). Every error the
// server returns as {"error": {"code", "message", "field"?}} becomes an
// ApiError that carries the code, the server's own message (so the UI can
// show it) and the JSON path of the offending field, when there is one (so
// the UI can place it).

const TOKEN_KEY = 'qlearn.token';
const EMAIL_KEY = 'qlearn.email';

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null, field = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    /** The offending request member's JSON path, e.g. `state_bins[0].bins`, or null. */
    this.field = field;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  get email() { return sessionStorage.getItem(EMAIL_KEY); },
  set(token, email) {
    sessionStorage.setItem(TOKEN_KEY, token);
    if (email != null) sessionStorage.setItem(EMAIL_KEY, email);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(EMAIL_KEY);
  },
};

// Called when an authenticated request comes back 401 (expired or revoked token).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

// Called after every metered call (predict, update, batch), successful or refused for quota.
let onMetered = () => {};
export function setMeteredHandler(fn) { onMetered = fn; }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A client-side token bucket a little under the plan's rate limit (from /dashboard),
// so the page itself never bursts into the server's per-second limiter. The server
// stays the judge: a `rate_limited` 429 is still waited out and retried below.
const bucket = { rate: 0, capacity: 0, tokens: 0, at: 0 };
export function setRateLimit(perSecond, burst) {
  if (!(perSecond > 0)) { bucket.rate = 0; return; }
  bucket.rate = perSecond * 0.8;
  bucket.capacity = Math.max(1, Math.floor((burst || perSecond) * 0.6));
  bucket.tokens = Math.min(bucket.tokens || bucket.capacity, bucket.capacity);
  bucket.at = performance.now();
}
async function takeToken() {
  if (!bucket.rate) return;
  for (;;) {
    const now = performance.now();
    bucket.tokens = Math.min(bucket.capacity, bucket.tokens + ((now - bucket.at) / 1000) * bucket.rate);
    bucket.at = now;
    if (bucket.tokens >= 1) { bucket.tokens -= 1; return; }
    await sleep(Math.ceil(((1 - bucket.tokens) / bucket.rate) * 1000));
  }
}

async function parseError(res) {
  let code = 'http_' + res.status;
  let message = `${res.status} ${res.statusText || 'error'}`;
  let field = null;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
      field = typeof body.error.field === 'string' ? body.error.field : null;
    }
  } catch { /* not JSON: keep the status line */ }
  const ra = res.headers.get('Retry-After');
  const retryAfter = ra != null && ra !== '' && !Number.isNaN(Number(ra)) ? Number(ra) : null;
  return new ApiError(res.status, code, message, retryAfter, field);
}

/**
 * request('POST', '/predict', body, {auth: true})
 * Retries a short `rate_limited` 429 by itself (the per-second limiter), never a quota refusal.
 */
export async function request(method, path, body = undefined, opts = {}) {
  const auth = opts.auth !== false;
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth && session.token) headers.Authorization = `Bearer ${session.token}`;
  for (let attempt = 0; ; attempt++) {
    let res;
    if (auth) await takeToken();
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'network_error', 'Cannot reach the server. Is saas-host running?');
    }
    if (res.ok) {
      if (opts.metered) onMetered();
      if (res.status === 204) return null;
      const text = await res.text();
      return text ? JSON.parse(text) : null;
    }
    const err = await parseError(res);
    if (err.status === 429 && err.code === 'rate_limited' && attempt < 3) {
      const wait = Math.min(5, Math.max(0.2, err.retryAfter ?? 1));
      await sleep(wait * 1000);
      continue;
    }
    if (err.status === 401 && auth && session.token) onUnauthorized(err);
    if (opts.metered && err.code === 'quota_exceeded') onMetered();
    throw err;
  }
}

export const api = {
  register: (email, password) => request('POST', '/register', { email, password }, { auth: false }),
  login: (email, password) => request('POST', '/login', { email, password }, { auth: false }),
  me: () => request('GET', '/me'),
  dashboard: () => request('GET', '/dashboard'),
  listModels: () => request('GET', '/models'),
  getModel: (id) => request('GET', `/models/${encodeURIComponent(id)}`),
  createModel: (body) => request('POST', '/models', body),
  patchModel: (id, body) => request('PATCH', `/models/${encodeURIComponent(id)}`, body),
  deleteModel: (id) => request('DELETE', `/models/${encodeURIComponent(id)}`),
  predict: (body) => request('POST', '/predict', body, { metered: true }),
  update: (body) => request('POST', '/update', body, { metered: true }),
  updateBatch: (body) => request('POST', '/update/batch', body, { metered: true }),
  // The latest `limit` decisions, newest first, uncounted: read from the
  // log's end, however long the log is.
  latestDecisions: (id, limit) =>
    request('GET', `/models/${encodeURIComponent(id)}/decisions?order=newest&count=false&limit=${limit}`),
  status: (id, offset, limit) =>
    request('GET', `/status/${encodeURIComponent(id)}?offset=${offset}&limit=${limit}`),
  // Offline evaluations (issue 18): jobs created, polled, listed, cancelled.
  createEvaluation: (id, body) => request('POST', `/models/${encodeURIComponent(id)}/evaluations`, body),
  getEvaluation: (id, eid) =>
    request('GET', `/models/${encodeURIComponent(id)}/evaluations/${encodeURIComponent(eid)}`),
  listEvaluations: (id, limit = 20, before = null) =>
    request('GET', `/models/${encodeURIComponent(id)}/evaluations?limit=${limit}${before ? `&before=${encodeURIComponent(before)}` : ''}`),
  deleteEvaluation: (id, eid) =>
    request('DELETE', `/models/${encodeURIComponent(id)}/evaluations/${encodeURIComponent(eid)}`),
  plans: () => request('GET', '/plans'),
  listKeys: () => request('GET', '/api-keys'),
  // scope: read | engine | full | admin; expiresInDays: 1..3650, or null for no expiry.
  createKey: (name, scope, expiresInDays) => request('POST', '/api-keys', {
    name,
    ...(scope ? { scope } : {}),
    ...(expiresInDays != null ? { expires_in_days: expiresInDays } : {}),
  }),
  deleteKey: (id) => request('DELETE', `/api-keys/${encodeURIComponent(id)}`),
  // EventSource cannot send headers: the stream is opened with a short-lived, single-use
  // ticket (never the session token: URLs end up in proxy logs).
  eventsTicket: (id) => request('POST', `/models/${encodeURIComponent(id)}/events/ticket`),
  eventsUrl: (id, ticket) =>
    `/models/${encodeURIComponent(id)}/events?ticket=${encodeURIComponent(ticket)}`,
};

/**
 * Parse what a user typed as a state: `[..]` → array (JSON), integer text → integer,
 * a JSON string literal ("7") → that string, anything else → the trimmed text.
 * Throws Error with a readable message when an array is malformed.
 */
export function parseState(text) {
  const t = String(text ?? '').trim();
  if (t === '') throw new Error('Enter a state: a string, an integer or an array like [0, 1].');
  if (t.startsWith('[')) {
    let v;
    try { v = JSON.parse(t); } catch { throw new Error(`"${t}" is not a valid array; write it like [0, 1.5].`); }
    if (!Array.isArray(v)) throw new Error('An array state must be a list of numbers, like [0, 1].');
    return v;
  }
  if (/^-?\d+$/.test(t)) {
    const n = Number(t);
    if (Number.isSafeInteger(n)) return n;
  }
  if (t.length >= 2 && t.startsWith('"') && t.endsWith('"')) {
    try { const s = JSON.parse(t); if (typeof s === 'string') return s; } catch { /* fall through */ }
  }
  return t;
}

/** The canonical key of a state for matching rows and events: JSON of the parsed value. */
export function stateKey(state) {
  if (Array.isArray(state)) return JSON.stringify(state.map((x) => (Object.is(x, -0) ? 0 : Number(x))));
  return JSON.stringify(state);
}

/** How a state is shown to a person: arrays as [a, b], strings bare, integers as digits. */
export function formatState(state) {
  if (Array.isArray(state)) return '[' + state.map((x) => fmtNum(x, 6)).join(', ') + ']';
  return String(state);
}

/** Text to put back into a state input so that parseState() returns the same state. */
export function stateToInput(state) {
  if (Array.isArray(state)) return formatState(state);
  if (typeof state === 'string' && (/^-?\d+$/.test(state.trim()) || state.trim().startsWith('[') || state !== state.trim())) {
    return JSON.stringify(state);
  }
  return String(state);
}

export function fmtNum(x, digits = 3) {
  if (x == null || Number.isNaN(x)) return '–';
  if (Number.isInteger(x)) return String(x);
  const r = Number(x.toFixed(digits));
  return String(Object.is(r, -0) ? 0 : r);
}
