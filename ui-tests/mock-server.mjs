// A development stand-in for saas-host: an in-memory server that speaks the wire
// contract of docs/http-api.md and serves saas-host/static/, so the dashboard can be
// worked on (and the browser test dry-run) without building the Rust host.
//
//   node ui-tests/mock-server.mjs --port 8765
//
// It is NOT what scripts/ui-test.sh tests: that always runs the real binary.

import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const staticDir = path.resolve(here, '..', 'saas-host', 'static');
const args = process.argv.slice(2);
const port = Number(args[args.indexOf('--port') + 1]) || 8765;
const LIMITS = { free: { monthly_calls: 100, max_models: 3, rate_per_second: 5, burst: 10 } };

const users = new Map(); // email -> user
const tokens = new Map(); // token -> user
const models = new Map(); // id -> model
const keys = new Map(); // id -> key
const listeners = new Map(); // model id -> Set(res)

const rid = () => crypto.randomBytes(12).toString('base64url');
const now = () => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const month = () => new Date().toISOString().slice(0, 7);

class HttpError extends Error {
  constructor(status, code, message, headers = {}) { super(message); this.status = status; this.code = code; this.headers = headers; }
}
const invalid = (m) => new HttpError(422, 'invalid_field', m);

function send(res, status, body, headers = {}) {
  if (status === 204) { res.writeHead(204, headers); res.end(); return; }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function stateKey(s) {
  if (Array.isArray(s)) {
    if (s.length > 64 || !s.every((x) => typeof x === 'number' && Number.isFinite(x))) throw new HttpError(422, 'invalid_state', 'state must be a string, an integer or an array of up to 64 finite numbers');
    return 'a' + JSON.stringify(s.map((x) => (Object.is(x, -0) ? 0 : x)));
  }
  if (typeof s === 'string') return 's' + s;
  if (Number.isInteger(s)) return 'i' + s;
  throw new HttpError(422, 'invalid_state', 'state must be a string, an integer or an array of up to 64 finite numbers');
}

function checkNum(body, k, lo, hi, loOpen = false) {
  if (body[k] === undefined) return;
  const v = body[k];
  if (typeof v !== 'number' || !Number.isFinite(v) || (loOpen ? v <= lo : v < lo) || v > hi) {
    throw invalid(`${k} must be a number in ${loOpen ? '(' : '['}${lo}, ${hi}], got ${JSON.stringify(v)}`);
  }
}

function validateModel(b, creating) {
  if (creating || b.name !== undefined) {
    if (typeof b.name !== 'string' || b.name.length < 1 || b.name.length > 100) throw invalid('name must be 1 to 100 characters');
  }
  if (creating) {
    if (!Number.isInteger(b.n_actions) || b.n_actions < 1 || b.n_actions > 4096) throw invalid('n_actions must be an integer in 1..=4096');
  }
  checkNum(b, 'learning_rate', 0, 1, true);
  checkNum(b, 'discount_factor', 0, 1);
  checkNum(b, 'epsilon', 0, 1);
  checkNum(b, 'epsilon_decay', 0, 1, true);
  checkNum(b, 'min_epsilon', 0, 1);
  checkNum(b, 'temperature', 0, 1e9, true);
  if (b.initial_q !== undefined && !Number.isFinite(b.initial_q)) throw invalid('initial_q must be a finite number');
  if (b.algorithm !== undefined && !['q_learning', 'sarsa', 'expected_sarsa', 'double_q_learning'].includes(b.algorithm)) throw invalid('algorithm must be one of q_learning, sarsa, expected_sarsa, double_q_learning');
  if (b.exploration !== undefined && !['epsilon_greedy', 'softmax'].includes(b.exploration)) throw invalid('exploration must be epsilon_greedy or softmax');
  if (b.seed != null && (!Number.isInteger(b.seed) || b.seed < 0)) throw invalid('seed must be a non-negative integer or null');
}

function publicModel(m) {
  const { owner, table, order, ...rest } = m;
  return { ...rest, stats: { ...m.stats, states: table.size, recent_returns: m.stats.recent_returns.slice() } };
}

function newModel(owner, b) {
  validateModel(b, true);
  if (b.action_names != null) {
    if (!Array.isArray(b.action_names) || b.action_names.length !== b.n_actions) throw invalid(`action_names must have n_actions (${b.n_actions}) entries`);
    if (new Set(b.action_names).size !== b.action_names.length) throw invalid('action_names must be unique');
  }
  const m = {
    id: rid(), name: b.name, n_actions: b.n_actions, action_names: b.action_names ?? null,
    learning_rate: b.learning_rate ?? 0.1, discount_factor: b.discount_factor ?? 0.95, epsilon: b.epsilon ?? 0.1,
    epsilon_decay: b.epsilon_decay ?? 1.0, min_epsilon: b.min_epsilon ?? 0.01, initial_q: b.initial_q ?? 0,
    algorithm: b.algorithm ?? 'q_learning', exploration: b.exploration ?? 'epsilon_greedy', temperature: b.temperature ?? 1.0,
    seed: b.seed ?? null, state_bins: b.state_bins ?? null, created_at: now(), updated_at: now(),
    stats: { predictions: 0, updates: 0, episodes: 0, states: 0, epsilon: b.epsilon ?? 0.1, mean_reward: 0, recent_returns: [] },
    owner: owner.id, table: new Map(), order: [], episodeReturn: 0, rewardSum: 0,
  };
  models.set(m.id, m);
  return m;
}

function meter(user, n) {
  const lim = LIMITS[user.tier].monthly_calls;
  const day = new Date().toISOString().slice(0, 10);
  const used = [...user.usage.values()].reduce((a, b) => a + b, 0);
  if (lim != null && used + n > lim) {
    const next = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() + 1, 1));
    throw new HttpError(429, 'quota_exceeded', `monthly quota of ${lim} calls reached; resets ${next.toISOString().replace(/\.\d+Z$/, 'Z')}`,
      { 'Retry-After': String(Math.ceil((next - Date.now()) / 1000)) });
  }
  user.usage.set(day, (user.usage.get(day) || 0) + n);
}

function qRow(m, state) {
  const k = stateKey(state);
  return m.table.get(k)?.q ?? new Array(m.n_actions).fill(m.initial_q);
}

function applyUpdate(m, e) {
  if (!Number.isInteger(e.action) || e.action < 0 || e.action >= m.n_actions) throw new HttpError(422, 'invalid_action', `action must be in 0..${m.n_actions}, got ${JSON.stringify(e.action)}`);
  if (typeof e.reward !== 'number' || !Number.isFinite(e.reward)) throw invalid('reward must be a finite number');
  const k = stateKey(e.state);
  stateKey(e.next_state);
  if (!m.table.has(k)) { m.table.set(k, { state: e.state, q: new Array(m.n_actions).fill(m.initial_q) }); m.order.push(k); }
  const row = m.table.get(k).q;
  const next = qRow(m, e.next_state);
  const target = e.reward + m.discount_factor * (e.done ? 0 : Math.max(...next));
  const td = target - row[e.action];
  row[e.action] += m.learning_rate * td;
  m.stats.updates += 1;
  m.rewardSum += e.reward;
  m.stats.mean_reward = m.rewardSum / m.stats.updates;
  m.episodeReturn += e.reward;
  let episodeReturn = null;
  if (e.done || e.truncated) {
    episodeReturn = m.episodeReturn;
    m.episodeReturn = 0;
    m.stats.episodes += 1;
    m.stats.recent_returns.push(episodeReturn);
    if (m.stats.recent_returns.length > 100) m.stats.recent_returns.shift();
    m.stats.epsilon = Math.max(m.min_epsilon, m.stats.epsilon * m.epsilon_decay);
  }
  m.updated_at = now();
  const event = {
    state: e.state, action: e.action, q_values: row.slice(), q_value: row[e.action], td_error: td,
    epsilon: m.stats.epsilon, updates: m.stats.updates, episodes: m.stats.episodes, episode_return: episodeReturn,
  };
  for (const res of listeners.get(m.id) || []) res.write(`event: update\ndata: ${JSON.stringify(event)}\n\n`);
  return { q_value: row[e.action], td_error: td, epsilon: m.stats.epsilon };
}

function auth(req, url, allowQuery = false) {
  const h = req.headers.authorization || '';
  let tok = h.startsWith('Bearer ') ? h.slice(7) : null;
  if (!tok && allowQuery) tok = url.searchParams.get('access_token');
  const user = tok && tokens.get(tok);
  if (!user) throw new HttpError(401, 'unauthorized', 'missing or invalid credentials');
  return user;
}

function ownModel(user, id) {
  const m = models.get(id);
  if (!m || m.owner !== user.id) throw new HttpError(404, 'not_found', 'model not found');
  return m;
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  if (!(req.headers['content-type'] || '').includes('application/json')) throw new HttpError(415, 'unsupported_media_type', 'send JSON with Content-Type: application/json');
  try { return JSON.parse(text); } catch { throw new HttpError(400, 'malformed_json', 'the body is not valid JSON'); }
}

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png' };

function issue(user) {
  const t = rid() + rid();
  tokens.set(t, user);
  return { access_token: t, token_type: 'bearer', expires_in: 3600 };
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://x');
  const p = url.pathname;
  const M = req.method;
  if (M === 'GET' && (p === '/' || p.startsWith('/static/'))) {
    const file = p === '/' ? 'index.html' : p.slice('/static/'.length);
    const full = path.join(staticDir, file);
    if (!full.startsWith(staticDir) || !fs.existsSync(full)) throw new HttpError(404, 'not_found', 'no such route');
    const body = fs.readFileSync(full);
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(full)] || 'application/octet-stream', 'Cache-Control': 'no-cache' });
    res.end(body);
    return;
  }
  if (M === 'GET' && p === '/healthz') return send(res, 200, { status: 'ok' });
  if (M === 'POST' && p === '/register') {
    const b = await readJson(req);
    if (typeof b.email !== 'string' || !/^[^@\s]+@[^@\s]+$/.test(b.email)) throw invalid('email must be a valid email address');
    if (typeof b.password !== 'string' || b.password.length < 8 || b.password.length > 1024) throw invalid('password must be 8 to 1024 characters');
    if (users.has(b.email.toLowerCase())) throw new HttpError(409, 'email_taken', 'an account with this email already exists');
    const user = { id: rid(), email: b.email, password: b.password, tier: 'free', role: 'user', created_at: now(), usage: new Map() };
    users.set(b.email.toLowerCase(), user);
    const m = newModel(user, { name: 'default', n_actions: 4 });
    return send(res, 201, { ...issue(user), user: { id: user.id, email: user.email, tier: user.tier, role: user.role }, default_model_id: m.id });
  }
  if (M === 'POST' && p === '/login') {
    const b = await readJson(req);
    const user = users.get(String(b.email || '').toLowerCase());
    if (!user || user.password !== b.password) throw new HttpError(401, 'invalid_credentials', 'invalid email or password');
    return send(res, 200, issue(user));
  }
  const sse = p.match(/^\/models\/([^/]+)\/events$/);
  if (M === 'GET' && sse) {
    const user = auth(req, url, true);
    const m = ownModel(user, sse[1]);
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    res.write(': connected\n\n');
    if (!listeners.has(m.id)) listeners.set(m.id, new Set());
    listeners.get(m.id).add(res);
    const ka = setInterval(() => res.write(': keep-alive\n\n'), 15000);
    req.on('close', () => { clearInterval(ka); listeners.get(m.id)?.delete(res); });
    return;
  }
  const user = auth(req, url);
  const lim = LIMITS[user.tier];
  if (M === 'GET' && p === '/me') return send(res, 200, { id: user.id, email: user.email, tier: user.tier, role: user.role, created_at: user.created_at });
  if (M === 'GET' && p === '/dashboard') {
    const mo = month();
    const [y, mm] = mo.split('-').map(Number);
    const days = new Date(Date.UTC(y, mm, 0)).getUTCDate();
    const per_day = Array.from({ length: days }, (_, i) => {
      const date = `${mo}-${String(i + 1).padStart(2, '0')}`;
      return { date, calls: user.usage.get(date) || 0 };
    });
    const calls = per_day.reduce((a, d) => a + d.calls, 0);
    return send(res, 200, {
      user: { id: user.id, email: user.email, tier: user.tier, role: user.role },
      limits: { tier: user.tier, ...lim },
      usage: { month: mo, calls, limit: lim.monthly_calls, remaining: Math.max(0, lim.monthly_calls - calls), resets_at: new Date(Date.UTC(y, mm, 1)).toISOString().replace(/\.\d+Z$/, 'Z'), per_day },
      models: [...models.values()].filter((m) => m.owner === user.id).map(publicModel),
    });
  }
  if (M === 'GET' && p === '/models') return send(res, 200, [...models.values()].filter((m) => m.owner === user.id).map(publicModel));
  if (M === 'POST' && p === '/models') {
    const b = await readJson(req);
    if ([...models.values()].filter((m) => m.owner === user.id).length >= lim.max_models) throw new HttpError(403, 'model_limit_reached', `the ${user.tier} tier allows ${lim.max_models} models`);
    return send(res, 201, publicModel(newModel(user, b)));
  }
  const mm = p.match(/^\/models\/([^/]+)$/);
  if (mm) {
    const m = ownModel(user, mm[1]);
    if (M === 'GET') return send(res, 200, publicModel(m));
    if (M === 'DELETE') { models.delete(m.id); return send(res, 204); }
    if (M === 'PATCH') {
      const b = await readJson(req);
      if (b.n_actions !== undefined || b.state_bins !== undefined) throw invalid('n_actions and state_bins cannot be changed');
      validateModel(b, false);
      for (const [k, v] of Object.entries(b)) m[k] = v;
      if (b.epsilon !== undefined) m.stats.epsilon = b.epsilon;
      m.updated_at = now();
      return send(res, 200, publicModel(m));
    }
  }
  const st = p.match(/^\/status\/([^/]+)$/);
  if (M === 'GET' && st) {
    const m = ownModel(user, st[1]);
    const offset = Number(url.searchParams.get('offset') || 0);
    const limit = Math.min(1000, Number(url.searchParams.get('limit') || 100));
    const rows = m.order.slice(offset, offset + limit).map((k) => ({ state: m.table.get(k).state, q_values: m.table.get(k).q }));
    const pm = publicModel(m);
    return send(res, 200, { model: pm, stats: pm.stats, q_table: { total: m.order.length, offset, limit, rows } });
  }
  if (M === 'POST' && p === '/predict') {
    const b = await readJson(req);
    const m = ownModel(user, b.model_id);
    const q = qRow(m, b.state);
    meter(user, 1);
    m.stats.predictions += 1;
    const allowed = b.allowed_actions ?? [...q.keys()];
    let action;
    let explored = false;
    if (b.explore !== false && Math.random() < m.stats.epsilon) { action = allowed[Math.floor(Math.random() * allowed.length)]; explored = true; } else {
      const best = Math.max(...allowed.map((a) => q[a]));
      const ties = allowed.filter((a) => q[a] === best);
      action = ties[Math.floor(Math.random() * ties.length)];
    }
    return send(res, 200, { action, action_name: m.action_names ? m.action_names[action] : null, q_values: q, explored, epsilon: m.stats.epsilon });
  }
  if (M === 'POST' && p === '/update') {
    const b = await readJson(req);
    const m = ownModel(user, b.model_id);
    meter(user, 1);
    return send(res, 200, applyUpdate(m, b));
  }
  if (M === 'POST' && p === '/update/batch') {
    const b = await readJson(req);
    const m = ownModel(user, b.model_id);
    if (!Array.isArray(b.experiences) || b.experiences.length < 1 || b.experiences.length > 1000) throw invalid('experiences must hold 1 to 1000 updates');
    meter(user, b.experiences.length);
    return send(res, 200, { results: b.experiences.map((e) => applyUpdate(m, e)) });
  }
  if (p === '/api-keys' && M === 'GET') return send(res, 200, [...keys.values()].filter((k) => k.owner === user.id).map(({ owner, key, ...k }) => k));
  if (p === '/api-keys' && M === 'POST') {
    const b = await readJson(req);
    if (typeof b.name !== 'string' || !b.name.trim()) throw invalid('name must be 1 to 100 characters');
    const key = 'qlk_' + rid() + rid();
    const k = { id: rid(), name: b.name, prefix: key.slice(0, 10), created_at: now(), last_used_at: null, owner: user.id, key };
    keys.set(k.id, k);
    tokens.set(key, user);
    return send(res, 201, { id: k.id, name: k.name, key, prefix: k.prefix, created_at: k.created_at });
  }
  const km = p.match(/^\/api-keys\/([^/]+)$/);
  if (km && M === 'DELETE') {
    const k = keys.get(km[1]);
    if (!k || k.owner !== user.id) throw new HttpError(404, 'not_found', 'key not found');
    keys.delete(k.id);
    tokens.delete(k.key);
    return send(res, 204);
  }
  throw new HttpError(404, 'not_found', 'no such route');
}

http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    if (e instanceof HttpError) send(res, e.status, { error: { code: e.code, message: e.message } }, e.headers);
    else { console.error(e); send(res, 500, { error: { code: 'internal', message: String(e) } }); }
  });
}).listen(port, '127.0.0.1', () => console.log(`mock qlearn on http://127.0.0.1:${port}`));
