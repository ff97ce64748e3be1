// The Operate page's view of the selected model: which model is selected, its
// status (stats, a page of the Q-table, recent returns), the live event stream
// that keeps them current, and the heatmap, stats row and learning curve.

import { api, session, stateKey, formatState, fmtNum } from './api.js';
import { learningCurve, heatColor } from './charts.js';
import { scheduleUsageRefresh } from './dashboard.js';
import { showDecisions } from './decisions.js';
import { showEvaluation } from './evaluation.js';
import { renderDemoGrid, renderDemoInfo, stopDemo } from './demo.js';
import { S } from './state.js';
import { $, h, showError, fmtInt, actionLabel } from './ui.js';

const MAX_HEAT_COLUMNS = 64;
const MAX_RETURNS = 200;

export function renderModelSelect() {
  const sel = $('#model-select');
  const cur = S.selectedId;
  sel.replaceChildren(...S.models.map((m) => h('option', { value: m.id, selected: m.id === cur }, `${m.name} (${m.n_actions} actions)`)));
  $('#operate-empty').hidden = S.models.length > 0;
  $('#operate-body').hidden = S.models.length === 0;
}

export async function selectModel(id) {
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
  showDecisions(m);
  showEvaluation(m);
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

const reloadStatus = () => loadStatus(false).catch((e) => showError($('#operate-error'), e));

let statusTimer = null;
export function scheduleStatusRefresh(delay = 400) {
  clearTimeout(statusTimer);
  statusTimer = setTimeout(reloadStatus, delay);
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
  const attempt = {};
  S.esAttempt = attempt;
  api.eventsTicket(id).then(
    ({ ticket }) => { if (S.esAttempt === attempt && S.selectedId === id) connect(id, ticket); },
    () => { if (S.esAttempt === attempt) retryEvents(id, 5000); },
  );
}

// A ticket opens one stream once: the browser's own reconnect would reuse it and be
// refused, so on any error the stream is closed here and reopened with a new ticket.
function connect(id, ticket) {
  const es = new EventSource(api.eventsUrl(id, ticket));
  S.es = es;
  S.esModel = id;
  let opened = false;
  es.addEventListener('open', () => { if (S.es === es) { opened = true; setLive('open', 'live'); } });
  const onData = (e) => {
    if (S.es !== es) return;
    let data;
    try { data = JSON.parse(e.data); } catch { return; }
    if (data && data.state !== undefined) onModelEvent(data);
  };
  es.addEventListener('update', onData);
  es.addEventListener('message', onData); // tolerate a stream that sends unnamed events
  // The server ends a stream whose credential expired or was revoked.
  es.addEventListener('end', () => { if (S.es === es) { es.close(); S.es = null; retryEvents(id, 1000); } });

  es.addEventListener('error', () => {
    if (S.es !== es) return;
    es.close();
    S.es = null;
    // Dropped after it was live: reconnect soon; refused: retry in a while. Either way
    // catch up with a status reload so nothing is missed meanwhile.
    retryEvents(id, opened ? 1000 : 5000);
  });
}

function retryEvents(id, delay) {
  setLive('idle', 'offline — retrying');
  clearTimeout(S.esRetry);
  S.esRetry = setTimeout(() => {
    if (S.selectedId === id && S.view === 'operate' && session.token) { scheduleStatusRefresh(0); openEvents(); }
  }, delay);
}

export function closeEvents() {
  clearTimeout(S.esRetry);
  S.esAttempt = null;
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

export function renderStats() {
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

/** The Q-table's pager. */
export function wireLive() {
  $('#qt-prev').addEventListener('click', () => { S.qt.offset = Math.max(0, S.qt.offset - S.qt.limit); reloadStatus(); });
  $('#qt-next').addEventListener('click', () => { S.qt.offset += S.qt.limit; reloadStatus(); });
  $('#qt-limit').addEventListener('change', (e) => { S.qt.limit = Number(e.target.value); S.qt.offset = 0; reloadStatus(); });
}
