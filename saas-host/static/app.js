// qlearn web dashboard. Plain ES modules, no framework, no build step; it calls
// only the public HTTP API (docs/http-api.md).

import {
  api, session, ApiError, setUnauthorizedHandler, setMeteredHandler, setRateLimit,
  parseState, stateKey, formatState, stateToInput, fmtNum,
} from './api.js';
import { usageChart, learningCurve, heatColor } from './charts.js';
import { runDemo, renderGrid, ACTION_NAMES as GRID_ACTIONS } from './gridworld.js';

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const MAX_HEAT_COLUMNS = 64;
const MAX_RETURNS = 200;

const S = {
  dashboard: null,
  models: [],
  view: null,
  selectedId: null,
  selected: null, // model object of the Operate view
  qt: { offset: 0, limit: 25, total: 0, rows: [] },
  qIndex: new Map(), // stateKey -> q_values, every state this page has seen
  returns: [],
  stats: null,
  es: null,
  esModel: null,
  esRetry: null,
  demo: null, // {controller}
  demoAgent: null,
  demoBudgetTouched: false,
  demoSizeTouched: false,
  editing: null, // model being edited, or null when creating
  authMode: 'login',
};

// ------------------------------------------------------------------ helpers

function toast(message, kind = 'info') {
  const t = h('div', { class: `toast ${kind === 'error' ? 'error' : ''}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 7000 : 3500);
}

function showError(box, err) {
  if (!box) return;
  if (!err) { box.hidden = true; box.textContent = ''; return; }
  box.textContent = err instanceof ApiError || err instanceof Error ? err.message : String(err);
  if (err instanceof ApiError) box.dataset.code = err.code; else delete box.dataset.code;
  box.hidden = false;
}

function fmtDate(iso, withTime = false) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString('en-GB', withTime
    ? { day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit', timeZone: 'UTC' }
    : { day: 'numeric', month: 'long', year: 'numeric', timeZone: 'UTC' }) + (withTime ? ' UTC' : '');
}

const todayUtc = () => new Date().toISOString().slice(0, 10);
const fmtInt = (n) => (n == null ? '∞' : Number(n).toLocaleString('en-US'));

function actionLabel(model, i) {
  const names = model && model.action_names;
  return names && names[i] != null ? names[i] : `action ${i}`;
}

function confirmDialog({ title, text, ok = 'Delete' }) {
  const dlg = $('#confirm-dialog');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = ok;
  dlg.returnValue = '';
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.showModal();
  });
}

async function withBusy(button, fn) {
  const was = button.disabled;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try { return await fn(); } finally { button.disabled = was; button.removeAttribute('aria-busy'); }
}

// ------------------------------------------------------------------ auth

function setAuthMode(mode) {
  S.authMode = mode;
  $('#tab-login').setAttribute('aria-selected', String(mode === 'login'));
  $('#tab-register').setAttribute('aria-selected', String(mode === 'register'));
  $('#auth-submit').textContent = mode === 'login' ? 'Sign in' : 'Create account';
  $('#auth-password').setAttribute('autocomplete', mode === 'login' ? 'current-password' : 'new-password');
  showError($('#auth-error'), null);
}

async function onAuthSubmit(ev) {
  ev.preventDefault();
  const email = $('#auth-email').value.trim();
  const password = $('#auth-password').value;
  const box = $('#auth-error');
  showError(box, null);
  await withBusy($('#auth-submit'), async () => {
    try {
      if (S.authMode === 'register') {
        const res = await api.register(email, password);
        session.set(res.access_token, res.user?.email || email);
        toast('Account created. A first model is ready for you.');
      } else {
        const res = await api.login(email, password);
        session.set(res.access_token, email);
      }
      $('#auth-password').value = '';
      await enterApp();
    } catch (e) {
      showError(box, e);
    }
  });
}

function logout(message) {
  stopDemo();
  closeEvents();
  session.clear();
  S.dashboard = null;
  S.models = [];
  S.selectedId = null;
  S.selected = null;
  S.qIndex = new Map();
  S.demoBudgetTouched = false;
  $('#account').hidden = true;
  $('#main-nav').hidden = true;
  $('#quota-notice').hidden = true;
  for (const v of $$('.view')) v.hidden = true;
  $('#auth-view').hidden = false;
  setAuthMode('login');
  if (message) showError($('#auth-error'), message);
  if (location.hash !== '#/login') history.replaceState(null, '', '#/login');
  $('#auth-email').focus();
}

async function enterApp() {
  $('#auth-view').hidden = true;
  $('#account').hidden = false;
  $('#main-nav').hidden = false;
  $('#user-email').textContent = session.email || '';
  await loadDashboard();
  if (!location.hash || location.hash === '#/login' || location.hash === '#/' || location.hash === '#') {
    location.hash = '#/dashboard';
  } else {
    route();
  }
}

// ------------------------------------------------------------------ dashboard and usage

let usageTimer = null;
let usageLast = 0;
function scheduleUsageRefresh() {
  if (usageTimer) return;
  const wait = Math.max(700, 1500 - (Date.now() - usageLast));
  usageTimer = setTimeout(async () => {
    usageTimer = null;
    usageLast = Date.now();
    try { await loadDashboard(); } catch { /* shown elsewhere */ }
  }, wait);
}

async function loadDashboard() {
  const d = await api.dashboard();
  S.dashboard = d;
  S.models = d.models || [];
  setRateLimit(d.limits?.rate_per_second, d.limits?.burst);
  if (d.user?.email) { $('#user-email').textContent = d.user.email; }
  renderUsage();
  renderDashboard();
  if (S.view === 'models') renderModelsTable();
  if (S.view === 'operate') { renderModelSelect(); renderDemoInfo(); }
  return d;
}

function renderUsage() {
  const d = S.dashboard;
  if (!d) return;
  const u = d.usage || {};
  const limit = u.limit;
  const calls = u.calls ?? 0;
  const pct = limit ? calls / limit : 0;
  const cls = limit == null ? '' : pct >= 1 ? 'full' : pct >= 0.8 ? 'warn' : '';
  const tier = d.limits?.tier || d.user?.tier || '';
  $('#tier-badge').textContent = tier;
  const pill = $('#usage-pill');
  pill.className = `usage-pill ${cls}`;
  $('#usage-pill-text').textContent = limit == null ? `${fmtInt(calls)} calls` : `${fmtInt(calls)} / ${fmtInt(limit)}`;
  $('#usage-pill-fill').style.width = `${Math.min(100, pct * 100).toFixed(1)}%`;
  pill.title = limit == null ? 'Calls this month (unlimited plan)' : `${fmtInt(u.remaining)} of ${fmtInt(limit)} calls left this month`;

  const notice = $('#quota-notice');
  if (limit != null && pct >= 0.8) {
    notice.className = `notice ${cls}`;
    notice.dataset.level = pct >= 1 ? 'limit' : 'near';
    notice.textContent = pct >= 1
      ? `You have used all ${fmtInt(limit)} calls of your ${tier} plan this month. Predict and update calls are refused until ${fmtDate(u.resets_at)} (UTC).`
      : `You have used ${fmtInt(calls)} of ${fmtInt(limit)} calls this month (${Math.floor(pct * 100)}%). ${fmtInt(u.remaining)} left until ${fmtDate(u.resets_at)}.`;
    notice.hidden = false;
  } else {
    notice.hidden = true;
  }
}

function renderDashboard() {
  const d = S.dashboard;
  if (!d) return;
  const L = d.limits || {};
  const u = d.usage || {};
  $('#tier-name').textContent = L.tier || d.user?.tier || '–';
  const dl = $('#limits-list');
  dl.replaceChildren(
    h('dt', {}, 'Calls / month'), h('dd', {}, L.monthly_calls == null ? 'unlimited' : fmtInt(L.monthly_calls)),
    h('dt', {}, 'Models'), h('dd', {}, L.max_models == null ? 'unlimited' : `${S.models.length} of ${fmtInt(L.max_models)}`),
    h('dt', {}, 'Rate limit'), h('dd', {}, L.rate_per_second == null ? '–' : `${fmtInt(L.rate_per_second)}/s, burst ${fmtInt(L.burst)}`),
  );
  $('#usage-calls').textContent = fmtInt(u.calls ?? 0);
  $('#usage-limit-text').textContent = u.limit == null ? 'of unlimited' : `of ${fmtInt(u.limit)}`;
  $('#usage-remaining').textContent = u.limit == null ? 'unlimited' : fmtInt(u.remaining);
  const pct = u.limit ? (u.calls / u.limit) : 0;
  const meter = $('#usage-meter-fill');
  meter.style.width = `${Math.min(100, pct * 100).toFixed(1)}%`;
  meter.parentElement.className = `meter ${u.limit == null ? '' : pct >= 1 ? 'full' : pct >= 0.8 ? 'warn' : ''}`;
  $('#usage-resets').textContent = u.resets_at ? `Resets ${fmtDate(u.resets_at)}, 00:00 UTC.` : '';
  $('#usage-month').textContent = u.month
    ? new Date(`${u.month}-01T00:00:00Z`).toLocaleString('en-GB', { month: 'long', year: 'numeric', timeZone: 'UTC' })
    : '';
  if (!$('#view-dashboard').hidden) usageChart($('#usage-chart'), u.per_day || [], todayUtc());

  const tbody = $('#dashboard-models tbody');
  tbody.replaceChildren(...S.models.map((m) => h('tr', { 'data-testid': 'dash-model-row', 'data-model-id': m.id },
    h('td', {}, h('a', { href: `#/operate/${encodeURIComponent(m.id)}` }, m.name)),
    h('td', { class: 'hide-sm' }, m.algorithm),
    h('td', { class: 'num' }, fmtInt(m.stats?.updates ?? 0)),
    h('td', { class: 'num hide-sm' }, fmtInt(m.stats?.episodes ?? 0)),
    h('td', { class: 'num' }, fmtInt(m.stats?.states ?? 0)),
    h('td', { class: 'num hide-sm' }, fmtNum(m.stats?.epsilon ?? m.epsilon, 3)),
    h('td', {}, h('div', { class: 'row-actions' }, h('a', { class: 'btn btn-secondary btn-small', href: `#/operate/${encodeURIComponent(m.id)}` }, 'Operate'))),
  )));
  if (S.models.length === 0) tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No models yet.')));
}

// ------------------------------------------------------------------ models

const ENGINE_FIELDS = ['learning_rate', 'discount_factor', 'epsilon', 'epsilon_decay', 'min_epsilon', 'initial_q', 'temperature'];
// Longest names first so "min_epsilon" is matched before "epsilon".
const FIELD_NAMES = ['epsilon_decay', 'min_epsilon', 'discount_factor', 'learning_rate', 'action_names', 'state_bins',
  'n_actions', 'initial_q', 'algorithm', 'exploration', 'temperature', 'epsilon', 'seed', 'name'];

function renderModelsTable() {
  const tbody = $('#models-table tbody');
  tbody.replaceChildren(...S.models.map((m) => h('tr', { 'data-testid': 'model-row', 'data-model-id': m.id, 'data-model-name': m.name },
    h('td', {}, h('strong', {}, m.name)),
    h('td', { class: 'id hide-sm' }, m.id),
    h('td', { class: 'num' }, String(m.n_actions)),
    h('td', { class: 'hide-sm' }, m.algorithm),
    h('td', { class: 'num' }, fmtInt(m.stats?.updates ?? 0)),
    h('td', { class: 'num' }, fmtInt(m.stats?.states ?? 0)),
    h('td', {}, h('div', { class: 'row-actions' },
      h('a', { class: 'btn btn-secondary btn-small', href: `#/operate/${encodeURIComponent(m.id)}`, 'data-action': 'operate' }, 'Operate'),
      h('a', { class: 'btn btn-secondary btn-small', href: `#/models/${encodeURIComponent(m.id)}/edit`, 'data-action': 'edit' }, 'Edit'),
      h('button', { type: 'button', class: 'btn btn-danger-ghost btn-small', 'data-action': 'delete', onclick: () => deleteModel(m) }, 'Delete'),
    )),
  )));
  if (S.models.length === 0) tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No models yet. Create one above.')));
  const max = S.dashboard?.limits?.max_models;
  $('#models-limit-text').textContent = max == null ? `${S.models.length} models.` : `${S.models.length} of ${max} models on your plan.`;
}

async function refreshModels() {
  try {
    S.models = await api.listModels();
    renderModelsTable();
  } catch (e) {
    toast(e.message, 'error');
  }
}

function addBinRow(bin = { low: 0, high: 1, bins: 10 }, disabled = false) {
  const idx = $$('.bin-row', $('#f-state_bins')).length;
  const mkField = (key, label, value, step) => {
    const id = `f-bin-${idx}-${key}`;
    return h('div', { class: 'field' },
      h('label', { for: id }, label),
      h('input', { id, type: 'number', step, value: String(value), 'data-bin': key, disabled, inputmode: 'decimal' }));
  };
  const row = h('div', { class: 'bin-row' },
    mkField('low', `Dim ${idx + 1} low`, bin.low, 'any'),
    mkField('high', 'high', bin.high, 'any'),
    mkField('bins', 'bins', bin.bins, '1'),
    h('button', { type: 'button', class: 'btn btn-ghost btn-small', disabled, 'aria-label': `Remove dimension ${idx + 1}`, onclick: () => { row.remove(); } }, 'Remove'));
  $('#f-state_bins').append(row);
}

function clearFieldErrors() {
  for (const e of $$('#model-form .field-error')) e.remove();
  for (const e of $$('#model-form [aria-invalid]')) e.removeAttribute('aria-invalid');
  showError($('#model-form-error'), null);
}

function fieldError(field, message) {
  const input = field === 'state_bins' ? $('#f-state_bins-group') : $(`#f-${field}`);
  if (!input) return null;
  const p = h('p', { class: 'field-error', id: `f-${field}-error`, 'data-testid': 'field-error', 'data-field': field }, message);
  if (field === 'state_bins') {
    $('#f-state_bins').after(p);
  } else {
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', `f-${field}-error`);
    input.closest('.field').append(p);
  }
  return input;
}

function openModelForm(model) {
  S.editing = model || null;
  const f = $('#model-form');
  f.reset();
  clearFieldErrors();
  $('#f-state_bins').replaceChildren();
  const editing = !!model;
  $('#model-form-title').textContent = editing ? `Edit “${model.name}”` : 'New model';
  $('#model-form-submit').textContent = editing ? 'Save changes' : 'Create model';
  $('#f-n_actions').disabled = editing;
  $('#f-add-bin').disabled = editing;
  if (editing) {
    $('#f-name').value = model.name;
    $('#f-n_actions').value = model.n_actions;
    $('#f-action_names').value = (model.action_names || []).join(', ');
    for (const k of ENGINE_FIELDS) $(`#f-${k}`).value = model[k] ?? '';
    $('#f-algorithm').value = model.algorithm;
    $('#f-exploration').value = model.exploration;
    $('#f-seed').value = model.seed ?? '';
    for (const b of model.state_bins || []) addBinRow(b, true);
  } else {
    const base = 'my-model';
    let name = base;
    for (let i = 2; S.models.some((m) => m.name === name); i++) name = `${base}-${i}`;
    $('#f-name').value = name;
  }
  $('#model-editor').hidden = false;
  $('#f-name').focus();
}

function readNumber(id) {
  const raw = $(`#f-${id}`).value.trim();
  if (raw === '') return undefined;
  const n = Number(raw);
  return Number.isFinite(n) ? n : raw; // let the server name the bad field
}

function collectModelForm() {
  const body = {};
  body.name = $('#f-name').value.trim();
  const nA = readNumber('n_actions');
  if (nA !== undefined) body.n_actions = nA;
  const names = $('#f-action_names').value.trim();
  body.action_names = names === '' ? null : names.split(',').map((s) => s.trim());
  for (const k of ENGINE_FIELDS) {
    const v = readNumber(k);
    if (v !== undefined) body[k] = v;
  }
  body.algorithm = $('#f-algorithm').value;
  body.exploration = $('#f-exploration').value;
  const seed = readNumber('seed');
  body.seed = seed === undefined ? null : seed;
  const bins = $$('.bin-row', $('#f-state_bins')).map((row) => {
    const get = (k) => { const raw = $(`[data-bin="${k}"]`, row).value.trim(); const n = Number(raw); return raw === '' ? null : Number.isFinite(n) ? n : raw; };
    return { low: get('low'), high: get('high'), bins: get('bins') };
  });
  body.state_bins = bins.length ? bins : null;
  return body;
}

function sameValue(a, b) { return JSON.stringify(a ?? null) === JSON.stringify(b ?? null); }

async function onModelSubmit(ev) {
  ev.preventDefault();
  clearFieldErrors();
  const body = collectModelForm();
  const editing = S.editing;
  await withBusy($('#model-form-submit'), async () => {
    try {
      let model;
      if (editing) {
        const patch = {};
        for (const [k, v] of Object.entries(body)) {
          if (k === 'n_actions' || k === 'state_bins') continue;
          if (!sameValue(v, editing[k])) patch[k] = v;
        }
        if (Object.keys(patch).length === 0) { toast('Nothing changed.'); location.hash = '#/models'; return; }
        model = await api.patchModel(editing.id, patch);
        S.models = S.models.map((m) => (m.id === model.id ? model : m));
        toast(`Saved “${model.name}”.`);
      } else {
        if (body.action_names === null) delete body.action_names;
        if (body.seed === null) delete body.seed;
        if (body.state_bins === null) delete body.state_bins;
        model = await api.createModel(body);
        S.models = [...S.models.filter((m) => m.id !== model.id), model];
        toast(`Created “${model.name}”.`);
      }
      $('#model-editor').hidden = true;
      S.editing = null;
      renderModelsTable();
      location.hash = editing ? '#/models' : `#/operate/${encodeURIComponent(model.id)}`;
    } catch (e) {
      showError($('#model-form-error'), e);
      if (e instanceof ApiError) {
        const field = FIELD_NAMES.find((f) => new RegExp(`\\b${f}\\b`).test(e.message));
        const input = field ? fieldError(field, e.message) : null;
        (input || $('#model-form-error')).focus?.();
      }
    }
  });
}

async function deleteModel(m) {
  const ok = await confirmDialog({
    title: `Delete “${m.name}”?`,
    text: 'Its Q-table and statistics are deleted for good. Clients that use its id will get 404.',
    ok: 'Delete model',
  });
  if (!ok) return;
  try {
    await api.deleteModel(m.id);
    S.models = S.models.filter((x) => x.id !== m.id);
    if (S.selectedId === m.id) { S.selectedId = null; closeEvents(); }
    renderModelsTable();
    toast(`Deleted “${m.name}”.`);
  } catch (e) {
    toast(e.message, 'error');
  }
}

// ------------------------------------------------------------------ API keys

async function loadKeys() {
  try {
    const keys = await api.listKeys();
    const tbody = $('#keys-table tbody');
    tbody.replaceChildren(...keys.map((k) => h('tr', { 'data-testid': 'key-row', 'data-key-id': k.id },
      h('td', {}, h('strong', {}, k.name)),
      h('td', { class: 'id' }, `${k.prefix}…`),
      h('td', { class: 'hide-sm' }, fmtDate(k.created_at, true)),
      h('td', {}, k.last_used_at ? fmtDate(k.last_used_at, true) : h('span', { class: 'muted' }, 'never')),
      h('td', {}, h('div', { class: 'row-actions' }, h('button', {
        type: 'button', class: 'btn btn-danger-ghost btn-small', 'data-action': 'revoke',
        onclick: () => revokeKey(k),
      }, 'Revoke'))),
    )));
    $('#keys-empty').hidden = keys.length > 0;
    $('#keys-table').hidden = keys.length === 0;
  } catch (e) {
    showError($('#key-error'), e);
  }
}

async function onKeySubmit(ev) {
  ev.preventDefault();
  showError($('#key-error'), null);
  const name = $('#key-name').value.trim();
  await withBusy($('#key-create'), async () => {
    try {
      const k = await api.createKey(name);
      $('#key-value').value = k.key;
      $('#key-created').hidden = false;
      $('#key-name').value = '';
      $('#key-value').focus();
      $('#key-value').select();
      await loadKeys();
    } catch (e) {
      showError($('#key-error'), e);
    }
  });
}

async function copyKey() {
  const input = $('#key-value');
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    try { document.execCommand('copy'); } catch { /* the text stays selected for a manual copy */ }
  }
  $('#key-copy').textContent = 'Copied';
  setTimeout(() => { $('#key-copy').textContent = 'Copy'; }, 2000);
}

async function revokeKey(k) {
  const ok = await confirmDialog({
    title: `Revoke “${k.name}”?`,
    text: 'Requests that use this key are refused from now on. This cannot be undone.',
    ok: 'Revoke key',
  });
  if (!ok) return;
  try {
    await api.deleteKey(k.id);
    toast(`Revoked “${k.name}”.`);
    await loadKeys();
  } catch (e) {
    toast(e.message, 'error');
  }
}

// ------------------------------------------------------------------ operate: model selection, status, events

function renderModelSelect() {
  const sel = $('#model-select');
  const cur = S.selectedId;
  sel.replaceChildren(...S.models.map((m) => h('option', { value: m.id, selected: m.id === cur }, `${m.name} (${m.n_actions} actions)`)));
  $('#operate-empty').hidden = S.models.length > 0;
  $('#operate-body').hidden = S.models.length === 0;
}

async function selectModel(id) {
  if (!id) return;
  const changed = id !== S.selectedId;
  S.selectedId = id;
  renderModelSelect();
  if (changed) {
    stopDemo();
    closeEvents();
    S.qt = { offset: 0, limit: Number($('#qt-limit').value) || 25, total: 0, rows: [] };
    S.qIndex = new Map();
    S.returns = [];
    S.demoAgent = null;
    $('#predict-result').hidden = true;
    $('#feedback-result').hidden = true;
    showError($('#operate-error'), null);
    $('#demo-status').textContent = '';
  }
  const m = S.models.find((x) => x.id === id);
  if (m) applyModel(m);
  try {
    await loadStatus(true);
  } catch (e) {
    showError($('#operate-error'), e);
    return;
  }
  if (changed || !S.es) openEvents();
}

function applyModel(m) {
  S.selected = m;
  const fill = (sel, withBlank) => {
    const cur = sel.value;
    const opts = [];
    if (withBlank) opts.push(h('option', { value: '' }, '—'));
    const n = Math.min(m.n_actions, 4096);
    for (let i = 0; i < n; i++) opts.push(h('option', { value: String(i) }, m.action_names ? `${i} · ${m.action_names[i]}` : String(i)));
    sel.replaceChildren(...opts);
    if (cur !== '' && Number(cur) < n) sel.value = cur;
  };
  fill($('#fb-action'), false);
  fill($('#fb-next-action'), true);
  const sarsa = m.algorithm === 'sarsa';
  $('#fb-next-action-opt').textContent = sarsa ? 'required for SARSA' : 'optional';
  renderDemoInfo();
}

async function loadStatus(resetStats) {
  const id = S.selectedId;
  if (!id) return;
  const st = await api.status(id, S.qt.offset, S.qt.limit);
  if (id !== S.selectedId) return;
  if (st.model) {
    S.models = S.models.map((x) => (x.id === st.model.id ? { ...st.model, stats: st.stats || st.model.stats } : x));
    applyModel({ ...st.model, stats: st.stats || st.model.stats });
  }
  const qt = st.q_table || { total: 0, offset: 0, limit: S.qt.limit, rows: [] };
  S.qt = { offset: qt.offset ?? S.qt.offset, limit: qt.limit ?? S.qt.limit, total: qt.total ?? qt.rows.length, rows: qt.rows || [] };
  for (const r of S.qt.rows) S.qIndex.set(stateKey(r.state), r.q_values);
  S.stats = { ...(st.stats || {}) };
  if (resetStats || S.returns.length === 0) S.returns = (st.stats?.recent_returns || []).slice(-MAX_RETURNS);
  renderStats();
  renderHeatmap();
  renderCurve();
  renderDemoGrid();
}

let statusTimer = null;
function scheduleStatusRefresh(delay = 400) {
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => { loadStatus(false).catch((e) => showError($('#operate-error'), e)); }, delay);
}

function setLive(state, text) {
  const el = $('#live-status');
  el.dataset.state = state;
  el.textContent = text;
}

function openEvents() {
  closeEvents();
  const id = S.selectedId;
  if (!id || !session.token) return;
  setLive('connecting', 'connecting…');
  const es = new EventSource(api.eventsUrl(id));
  S.es = es;
  S.esModel = id;
  es.addEventListener('open', () => { if (S.es === es) setLive('open', 'live'); });
  const onData = (e) => {
    if (S.es !== es) return;
    let data;
    try { data = JSON.parse(e.data); } catch { return; }
    if (data && data.state !== undefined) onModelEvent(data);
  };
  es.addEventListener('update', onData);
  es.addEventListener('message', onData); // tolerate a stream that sends unnamed events

  es.addEventListener('error', () => {
    if (S.es !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      // The server refused or ended the stream: retry in a while with the current token,
      // and catch up with a status reload so nothing is missed meanwhile.
      setLive('idle', 'offline — retrying');
      S.es = null;
      clearTimeout(S.esRetry);
      S.esRetry = setTimeout(() => {
        if (S.selectedId === id && S.view === 'operate' && session.token) { scheduleStatusRefresh(0); openEvents(); }
      }, 5000);
    } else {
      setLive('connecting', 'reconnecting…');
    }
  });
}

function closeEvents() {
  clearTimeout(S.esRetry);
  if (S.es) { S.es.close(); S.es = null; }
  setLive('idle', 'offline');
}

function onModelEvent(ev) {
  const key = stateKey(ev.state);
  const known = S.qIndex.has(key);
  if (Array.isArray(ev.q_values)) S.qIndex.set(key, ev.q_values);
  const row = S.qt.rows.find((r) => stateKey(r.state) === key);
  if (row && Array.isArray(ev.q_values)) {
    row.q_values = ev.q_values;
    renderHeatmap({ flashKey: key, flashAction: ev.action });
  } else if (!known) {
    // A state this page has not seen: the table grew, fetch the current page again.
    scheduleStatusRefresh(300);
    S.flashAfterLoad = { key, action: ev.action };
  }
  if (S.stats) {
    if (ev.updates != null) S.stats.updates = ev.updates;
    if (ev.episodes != null) S.stats.episodes = ev.episodes;
    if (ev.epsilon != null) S.stats.epsilon = ev.epsilon;
    if (!known && !row) S.stats.states = Math.max(S.stats.states || 0, S.qt.total + 1);
    renderStats();
  }
  if (ev.episode_return != null) {
    S.returns.push(ev.episode_return);
    if (S.returns.length > MAX_RETURNS) S.returns.splice(0, S.returns.length - MAX_RETURNS);
    renderCurve();
  }
  renderDemoGrid();
  scheduleUsageRefresh();
}

function renderStats() {
  const st = S.stats || {};
  $('#stat-predictions').textContent = fmtInt(st.predictions ?? 0);
  $('#stat-updates').textContent = fmtInt(st.updates ?? 0);
  $('#stat-episodes').textContent = fmtInt(st.episodes ?? 0);
  $('#stat-states').textContent = fmtInt(st.states ?? S.qt.total ?? 0);
  $('#stat-epsilon').textContent = fmtNum(st.epsilon, 4);
  $('#stat-mean-reward').textContent = fmtNum(st.mean_reward, 3);
}

function renderHeatmap(opts = {}) {
  const m = S.selected;
  const table = $('#heatmap');
  const rows = S.qt.rows;
  const nA = m ? m.n_actions : rows[0]?.q_values.length || 0;
  const cols = Math.min(nA, MAX_HEAT_COLUMNS);
  const headRow = h('tr', {}, h('th', { scope: 'col' }, 'State'));
  for (let a = 0; a < cols; a++) headRow.append(h('th', { scope: 'col', title: actionLabel(m, a) }, m?.action_names ? m.action_names[a] : String(a)));
  if (nA > cols) headRow.append(h('th', { scope: 'col' }, `+${nA - cols} more`));
  table.tHead.replaceChildren(headRow);
  let maxAbs = 0;
  for (const r of rows) for (const v of r.q_values) if (Number.isFinite(v)) maxAbs = Math.max(maxAbs, Math.abs(v));
  const flash = opts.flashKey ? opts : S.flashAfterLoad ? { flashKey: S.flashAfterLoad.key, flashAction: S.flashAfterLoad.action } : null;
  S.flashAfterLoad = null;
  const body = rows.map((r) => {
    const key = stateKey(r.state);
    const best = Math.max(...r.q_values);
    const uniqueBest = r.q_values.filter((v) => v === best).length === 1;
    const tr = h('tr', { 'data-testid': 'q-row', 'data-state': key }, h('th', { scope: 'row', title: formatState(r.state) }, formatState(r.state)));
    for (let a = 0; a < cols; a++) {
      const v = r.q_values[a];
      const [bg, fg] = heatColor(v, maxAbs);
      const td = h('td', {
        'data-testid': 'q-cell', 'data-state': key, 'data-action': a, 'data-value': v,
        class: [uniqueBest && v === best ? 'best' : '', flash && flash.flashKey === key && flash.flashAction === a ? 'flash' : ''].join(' ').trim() || null,
        title: `${formatState(r.state)} · ${actionLabel(m, a)}: ${v}`,
      }, fmtNum(v, 3));
      td.style.backgroundColor = bg;
      td.style.color = fg;
      tr.append(td);
    }
    if (nA > cols) tr.append(h('td', { class: 'muted' }, '…'));
    return tr;
  });
  table.tBodies[0].replaceChildren(...body);
  $('#heatmap-empty').hidden = rows.length > 0;
  table.hidden = rows.length === 0;
  const from = rows.length ? S.qt.offset + 1 : 0;
  const to = S.qt.offset + rows.length;
  $('#qt-range').textContent = `${fmtInt(from)}–${fmtInt(to)} of ${fmtInt(S.qt.total)} states`;
  $('#qt-prev').disabled = S.qt.offset <= 0;
  $('#qt-next').disabled = S.qt.offset + rows.length >= S.qt.total;
}

function renderCurve() {
  learningCurve($('#learning-curve'), S.returns);
  const n = S.returns.length;
  const r = S.returns;
  const last10 = r.slice(-10);
  $('#curve-summary').replaceChildren(...(n === 0 ? [] : [
    h('dt', {}, 'Last'), h('dd', { 'data-testid': 'curve-last' }, fmtNum(r[n - 1], 3)),
    h('dt', {}, 'Best'), h('dd', {}, fmtNum(Math.max(...r), 3)),
    h('dt', {}, `Mean of last ${last10.length}`), h('dd', {}, fmtNum(last10.reduce((a, b) => a + b, 0) / last10.length, 3)),
    h('dt', {}, 'Episodes'), h('dd', {}, fmtInt(S.stats?.episodes ?? n)),
  ]));
  $('#curve-caption').textContent = n ? `return of the last ${n} episode${n === 1 ? '' : 's'}` : 'return per episode';
}

function renderDemoGrid() {
  if (!S.selected) return;
  renderGrid($('#demo-grid'), S.qIndex, S.selected.n_actions, S.demoAgent, demoSize());
}

// ------------------------------------------------------------------ operate: predict and feedback

function parseActionList(text) {
  const t = text.trim();
  if (!t) return undefined;
  const parts = t.replace(/^\[|\]$/g, '').split(',').map((s) => s.trim()).filter(Boolean);
  const out = parts.map((p) => {
    if (!/^\d+$/.test(p)) throw new Error(`Allowed actions must be action numbers like 0, 2, 3 (got "${p}").`);
    return Number(p);
  });
  return out;
}

async function onPredict(ev) {
  ev.preventDefault();
  const box = $('#operate-error');
  showError(box, null);
  let state;
  let allowed;
  try {
    state = parseState($('#state-input').value);
    allowed = parseActionList($('#allowed-input').value);
  } catch (e) { showError(box, e); $('#state-input').focus(); return; }
  const body = { model_id: S.selectedId, state, explore: $('#explore-input').checked };
  if (allowed) body.allowed_actions = allowed;
  await withBusy($('#predict-btn'), async () => {
    try {
      const res = await api.predict(body);
      renderPrediction(res);
      if (S.stats) { S.stats.predictions = (S.stats.predictions || 0) + 1; S.stats.epsilon = res.epsilon; renderStats(); }
      // Pre-fill the feedback form with what was just decided.
      $('#fb-state').value = stateToInput(state);
      $('#fb-action').value = String(res.action);
    } catch (e) { showError(box, e); }
  });
}

function renderPrediction(res) {
  const m = S.selected;
  $('#pred-action').textContent = String(res.action);
  $('#pred-action-name').textContent = res.action_name ? `“${res.action_name}”` : '';
  const tag = $('#pred-explored');
  tag.textContent = res.explored ? 'explored (random)' : 'greedy (best known)';
  tag.className = `tag ${res.explored ? 'explored' : ''}`;
  tag.dataset.explored = String(!!res.explored);
  $('#pred-epsilon').textContent = fmtNum(res.epsilon, 4);
  const q = res.q_values || [];
  const maxAbs = Math.max(1e-9, ...q.map((v) => Math.abs(v)));
  const hasNeg = q.some((v) => v < 0);
  const hasPos = q.some((v) => v > 0);
  const zero = hasNeg && hasPos ? 50 : hasNeg ? 100 : 0; // where zero sits on the track, in %
  const span = hasNeg && hasPos ? 50 : 100;
  const shown = q.slice(0, 64);
  $('#q-bars').replaceChildren(...shown.map((v, i) => {
    const w = (Math.abs(v) / maxAbs) * span;
    const fill = h('span', { class: `qbar-fill ${v < 0 ? 'neg' : ''}` });
    fill.style.left = `${v < 0 ? zero - w : zero}%`;
    fill.style.width = `${w}%`;
    const zl = h('span', { class: 'qbar-zero' });
    zl.style.left = `${zero}%`;
    return h('div', { class: `qbar ${i === res.action ? 'chosen' : ''}`, 'data-testid': 'q-bar', 'data-action': i, 'data-value': v },
      h('span', { class: 'qbar-name', title: actionLabel(m, i) }, m?.action_names ? `${i} · ${m.action_names[i]}` : `action ${i}`),
      h('span', { class: 'qbar-track' }, zl, fill),
      h('span', { class: 'qbar-val' }, fmtNum(v, 4)));
  }));
  if (q.length > shown.length) $('#q-bars').append(h('p', { class: 'muted small' }, `… and ${q.length - shown.length} more actions`));
  $('#predict-result').hidden = false;
}

async function onFeedback(ev) {
  ev.preventDefault();
  const box = $('#operate-error');
  showError(box, null);
  let body;
  try {
    const state = parseState($('#fb-state').value);
    const nextRaw = $('#fb-next-state').value;
    if (!nextRaw.trim()) throw new Error('Enter the next state the action led to (for a final step, any state, e.g. the same one).');
    const next_state = parseState(nextRaw);
    const rewardRaw = $('#fb-reward').value.trim();
    if (rewardRaw === '' || !Number.isFinite(Number(rewardRaw))) throw new Error('Enter the reward as a number, e.g. 1 or -0.5.');
    body = {
      model_id: S.selectedId, state, action: Number($('#fb-action').value), reward: Number(rewardRaw), next_state,
      done: $('#fb-done').checked, truncated: $('#fb-truncated').checked,
    };
    const na = $('#fb-next-action').value;
    if (na !== '') body.next_action = Number(na);
  } catch (e) { showError(box, e); return; }
  await withBusy($('#feedback-btn'), async () => {
    try {
      const res = await api.update(body);
      const out = $('#feedback-result');
      out.replaceChildren(h('div', { class: 'result-grid' },
        h('div', {}, h('span', { class: 'stat-label' }, 'New Q(s, a)'), h('span', { class: 'stat-value', id: 'fb-q-value', 'data-testid': 'fb-q-value' }, fmtNum(res.q_value, 4))),
        h('div', {}, h('span', { class: 'stat-label' }, 'TD error'), h('span', { class: 'stat-value' }, fmtNum(res.td_error, 4))),
        h('div', {}, h('span', { class: 'stat-label' }, 'Epsilon'), h('span', { class: 'stat-value' }, fmtNum(res.epsilon, 4)))));
      out.hidden = false;
      // Without a live stream, catch up by reloading the table.
      if (!S.es || S.es.readyState !== EventSource.OPEN) scheduleStatusRefresh(200);
    } catch (e) { showError(box, e); }
  });
}

// ------------------------------------------------------------------ demo

function demoBudgetDefault() {
  const u = S.dashboard?.usage;
  if (!u || u.limit == null) return 400;
  return Math.max(1, Math.min(u.remaining ?? 0, Math.round(u.limit * 0.6), 400));
}

// A 3×3 grid learns visibly within the free plan's calls; 4×4 needs a few hundred.
function demoSizeDefault() {
  const u = S.dashboard?.usage;
  return u && u.limit != null && (u.remaining ?? 0) < 300 ? 3 : 4;
}

const demoSize = () => Number($('#demo-size').value) || 4;

function renderDemoInfo() {
  const m = S.selected;
  const info = $('#demo-info');
  const run = $('#demo-run');
  if (!m) return;
  if (S.demo) return;
  const u = S.dashboard?.usage;
  if (!S.demoBudgetTouched) $('#demo-budget').value = String(demoBudgetDefault());
  if (!S.demoSizeTouched) $('#demo-size').value = String(demoSizeDefault());
  const budget = Math.max(0, Math.floor(Number($('#demo-budget').value) || 0));
  info.replaceChildren();
  if (m.n_actions !== 4) {
    info.append(`The demo needs a model with 4 actions (up, down, left, right); “${m.name}” has ${m.n_actions}. `,
      h('button', { type: 'button', class: 'btn btn-secondary btn-small', id: 'demo-create', onclick: createDemoModel }, 'Create a gridworld model'));
    run.disabled = true;
    return;
  }
  run.disabled = budget < 1;
  if (!u || u.limit == null) {
    info.textContent = `Uses up to ${fmtInt(budget)} metered calls (one per step; your plan is unlimited).`;
  } else if (u.remaining <= 0) {
    info.textContent = 'Your monthly calls are used up, so the demo cannot run until the quota resets.';
    run.disabled = true;
  } else {
    info.textContent = `Uses up to ${fmtInt(budget)} metered calls (one per step) of the ${fmtInt(u.remaining)} you have left this month.`
      + (budget > u.remaining ? ' That is more than you have: it will stop when the quota is reached.' : '');
  }
}

async function createDemoModel() {
  try {
    const model = await api.createModel({
      name: `gridworld-demo-${Math.random().toString(36).slice(2, 6)}`, n_actions: 4, action_names: GRID_ACTIONS,
      learning_rate: 0.5, discount_factor: 0.95, epsilon: 0.1,
    });
    S.models = [...S.models, model];
    toast(`Created “${model.name}”.`);
    location.hash = `#/operate/${encodeURIComponent(model.id)}`;
  } catch (e) {
    $('#demo-status').className = 'small demo-status error';
    $('#demo-status').textContent = e.message;
  }
}

async function startDemo() {
  const m = S.selected;
  if (!m || S.demo) return;
  const budget = Math.floor(Number($('#demo-budget').value) || 0);
  const maxSteps = Math.floor(Number($('#demo-max-steps').value) || 40);
  const status = $('#demo-status');
  status.className = 'small demo-status';
  const controller = new AbortController();
  S.demo = { controller };
  $('#demo-run').disabled = true;
  $('#demo-stop').disabled = false;
  for (const id of ['#demo-size', '#demo-budget', '#demo-max-steps']) $(id).disabled = true;
  status.textContent = 'Running…';
  let lastText = '';
  const result = await runDemo({
    api, model: { ...m, stats: S.stats || m.stats }, size: demoSize(), budget, maxSteps, qIndex: S.qIndex, signal: controller.signal,
    onProgress: (p) => {
      S.demoAgent = p.agent;
      renderDemoGrid();
      if (p.lastReturn) {
        const r = p.lastReturn;
        lastText = ` Last episode: ${r.reachedGoal ? `goal in ${r.steps} steps` : `no goal in ${r.steps} steps`}, return ${fmtNum(r.ret, 2)}.`;
      }
      status.textContent = `Running… ${p.sent} of ${budget} calls used, ${p.episodes} episode${p.episodes === 1 ? '' : 's'} finished.${lastText}`;
    },
  });
  S.demo = null;
  S.demoAgent = null;
  S.demoBudgetTouched = false;
  $('#demo-stop').disabled = true;
  for (const id of ['#demo-size', '#demo-budget', '#demo-max-steps']) $(id).disabled = false;
  renderDemoGrid();
  const summary = `${result.sent} call${result.sent === 1 ? '' : 's'} used, ${result.episodes} episode${result.episodes === 1 ? '' : 's'} finished.${lastText}`;
  if (result.stoppedBy === 'error') {
    status.className = 'small demo-status error';
    status.textContent = `Stopped: ${result.error.message} (${summary})`;
  } else if (result.stoppedBy === 'abort') {
    status.textContent = `Stopped. ${summary}`;
  } else {
    status.textContent = `Done. ${summary}`;
  }
  scheduleUsageRefresh();
  scheduleStatusRefresh(300);
  renderDemoInfo();
}

function stopDemo() {
  if (S.demo) S.demo.controller.abort();
}

// ------------------------------------------------------------------ routing

function showView(name) {
  S.view = name;
  for (const v of $$('.view')) v.hidden = v.id !== `view-${name}`;
  for (const a of $$('#main-nav a')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (name !== 'operate') { stopDemo(); closeEvents(); }
}

async function route() {
  if (!session.token) { logout(); return; }
  const before = S.view;
  const hash = location.hash.replace(/^#\/?/, '');
  const parts = hash.split('/').map(decodeURIComponent);
  const [head, id, sub] = parts;
  switch (head) {
    case 'models': {
      showView('models');
      renderModelsTable();
      if (id === 'new') openModelForm(null);
      else if (id && sub === 'edit') {
        let m = S.models.find((x) => x.id === id);
        if (!m) { try { m = await api.getModel(id); } catch (e) { toast(e.message, 'error'); location.hash = '#/models'; return; } }
        openModelForm(m);
      } else { $('#model-editor').hidden = true; refreshModels(); }
      break;
    }
    case 'operate': {
      showView('operate');
      renderModelSelect();
      const target = id || S.selectedId || S.dashboard?.models?.[0]?.id || S.models[0]?.id;
      if (!target) break;
      if (!id) { history.replaceState(null, '', `#/operate/${encodeURIComponent(target)}`); }
      S.selectedId === target && S.es ? renderDemoInfo() : await selectModel(target);
      break;
    }
    case 'keys':
      showView('keys');
      loadKeys();
      break;
    case 'dashboard':
    default:
      showView('dashboard');
      renderDashboard();
      if (S.dashboard) usageChart($('#usage-chart'), S.dashboard.usage?.per_day || [], todayUtc());
      break;
  }
  // Move focus to the content when the view changed (as a page load would), not when
  // e.g. the model picker of the same view changed the address.
  if (S.view !== before && !$(`#view-${S.view}`).contains(document.activeElement)) {
    $('#main').focus({ preventScroll: true });
  }
}

// ------------------------------------------------------------------ wiring

function wire() {
  $('#tab-login').addEventListener('click', () => setAuthMode('login'));
  $('#tab-register').addEventListener('click', () => setAuthMode('register'));
  $('.segmented').addEventListener('keydown', (e) => {
    if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
      const next = S.authMode === 'login' ? 'register' : 'login';
      setAuthMode(next);
      $(`#tab-${next}`).focus();
    }
  });
  $('#auth-form').addEventListener('submit', onAuthSubmit);
  $('#logout-btn').addEventListener('click', () => logout());
  $('#dash-refresh').addEventListener('click', () => loadDashboard().catch((e) => toast(e.message, 'error')));
  $('#model-form').addEventListener('submit', onModelSubmit);
  $('#f-add-bin').addEventListener('click', () => addBinRow());
  $('#key-form').addEventListener('submit', onKeySubmit);
  $('#key-copy').addEventListener('click', copyKey);
  $('#key-dismiss').addEventListener('click', () => { $('#key-created').hidden = true; $('#key-value').value = ''; });
  $('#model-select').addEventListener('change', (e) => { location.hash = `#/operate/${encodeURIComponent(e.target.value)}`; });
  $('#predict-form').addEventListener('submit', onPredict);
  $('#feedback-form').addEventListener('submit', onFeedback);
  $('#demo-run').addEventListener('click', startDemo);
  $('#demo-stop').addEventListener('click', stopDemo);
  $('#demo-budget').addEventListener('input', () => { S.demoBudgetTouched = true; renderDemoInfo(); });
  $('#demo-size').addEventListener('change', () => { S.demoSizeTouched = true; renderDemoGrid(); renderDemoInfo(); });
  $('#qt-prev').addEventListener('click', () => { S.qt.offset = Math.max(0, S.qt.offset - S.qt.limit); loadStatus(false).catch((e) => showError($('#operate-error'), e)); });
  $('#qt-next').addEventListener('click', () => { S.qt.offset += S.qt.limit; loadStatus(false).catch((e) => showError($('#operate-error'), e)); });
  $('#qt-limit').addEventListener('change', (e) => { S.qt.limit = Number(e.target.value); S.qt.offset = 0; loadStatus(false).catch((err) => showError($('#operate-error'), err)); });
  window.addEventListener('hashchange', () => { if (session.token) route(); });

  setUnauthorizedHandler(() => logout('Your session has ended. Please sign in again.'));
  setMeteredHandler(() => scheduleUsageRefresh());
}

async function boot() {
  wire();
  if (session.token) {
    try {
      await enterApp();
      return;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) return; // the 401 handler signed out already
      logout();
      showError($('#auth-error'), e);
      return;
    }
  }
  logout();
}

boot();
