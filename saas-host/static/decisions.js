// The Operate page's decisions view, for a model that logs decisions (issue 14):
// the log's counts (decisions, rewards, pending, late, defaulted), the reward
// rate, decisions and rewards over time, and the most recent decisions with
// their reward status. Kept current by polling GET /models/{id}/decisions
// (the log changes with rewards and deadline settlements, which the update
// event stream does not carry) while the page shows such a model.

import { api, session, formatState, fmtNum } from './api.js';
import { decisionsChart } from './charts.js';
import { S } from './state.js';
import { $, h, fmtInt } from './ui.js';

const POLL_MS = 2000;
const PAGE = 1000; // the most the listing gives in one page
const RECENT = 15; // rows of the recent decisions table

let timer = null;
let shownId = null; // the model whose log is on screen
let loading = false;

/** Shows the decisions view for `model` (hidden when it logs no decisions). */
export function showDecisions(model) {
  const on = !!(model && model.decisions);
  $('#decisions-card').hidden = !on;
  if (!on) { stopDecisions(); shownId = null; return; }
  renderSetting(model.decisions);
  if (shownId === model.id && timer) return; // polling already
  if (shownId !== model.id) render(null);
  shownId = model.id;
  refreshDecisions();
  timer = setInterval(tick, POLL_MS);
}

/** Stops polling (another page, another model, signed out). */
export function stopDecisions() {
  clearInterval(timer);
  timer = null;
}

function tick() {
  const m = S.selected;
  if (!session.token || S.view !== 'operate' || !m || m.id !== shownId || !m.decisions) { stopDecisions(); return; }
  if (document.visibilityState === 'hidden') return;
  refreshDecisions();
}

/** Reloads the log's counts and its most recent page now. */
export async function refreshDecisions() {
  const id = shownId;
  if (!id || loading) return;
  loading = true;
  try {
    // One read from the log's end (no count, no offset: a long log costs
    // no more than a short one), put back in time order for the chart.
    const page = await api.latestDecisions(id, PAGE);
    page.decisions = (page.decisions || []).reverse();
    if (id === shownId) render(page);
  } catch (e) {
    if (id === shownId) $('#decisions-status').textContent = `not refreshed: ${e.message}`;
  } finally {
    loading = false;
  }
}

function renderSetting(d) {
  const wait = d.reward_wait_seconds;
  const parts = [
    `rewards wait ${wait >= 3600 && wait % 3600 === 0 ? `${wait / 3600} h` : wait >= 60 && wait % 60 === 0 ? `${wait / 60} min` : `${wait} s`}`,
    `aggregation ${d.aggregation}`,
    d.default_reward == null ? 'no default reward' : `default reward ${fmtNum(d.default_reward, 3)}`,
    `kept ${d.retention_days} days`,
  ];
  $('#decisions-setting').textContent = parts.join(' · ');
}

/**
 * The reward rate of `decisions`: the mean reward of those whose window has
 * closed (the learned reward; a decision that expired without one counts 0),
 * or null when none has closed.
 */
export function rewardRate(decisions) {
  const closed = decisions.filter((d) => d.status !== 'open');
  if (closed.length === 0) return null;
  return closed.reduce((sum, d) => sum + (d.reward ?? 0), 0) / closed.length;
}

function render(page) {
  const list = page?.decisions || [];
  const st = page?.stats || {};
  const set = (id, v) => { $(id).textContent = v; };
  set('#dstat-decisions', fmtInt(st.decisions ?? 0));
  set('#dstat-rewards', fmtInt(st.rewards ?? 0));
  const rate = rewardRate(list);
  set('#dstat-rate', rate == null ? '–' : fmtNum(rate, 3));
  $('#dstat-rate').dataset.value = rate == null ? '' : String(rate);
  set('#dstat-pending', fmtInt(st.pending ?? 0));
  set('#dstat-late', fmtInt(st.late ?? 0));
  set('#dstat-defaulted', fmtInt(st.defaulted ?? 0));
  const n = list.length;
  $('#decisions-status').textContent = page
    ? `${n < PAGE ? `all ${fmtInt(n)}` : `the latest ${fmtInt(n)}`} decision${n === 1 ? '' : 's'} in the log, updated ${new Date().toLocaleTimeString('en-GB')}`
    : 'loading…';
  decisionsChart($('#decisions-chart'), list);
  renderTable(list.slice(-RECENT).reverse());
}

function renderTable(rows) {
  const m = S.selected;
  const body = rows.map((d) => h('tr', { 'data-testid': 'decision-row', 'data-decision-id': d.decision_id, 'data-status': d.status },
    h('td', { class: 'small' }, new Date(d.time).toLocaleTimeString('en-GB')),
    h('td', { class: 'id' }, d.decision_id),
    h('td', { class: 'hide-sm' }, d.episode_id == null ? '–' : `${d.episode_id} · ${d.step}`),
    h('td', {}, formatState(d.state)),
    h('td', {}, m?.action_names?.[d.action] ?? String(d.action)),
    h('td', { class: 'num' }, fmtNum(d.probability, 3)),
    h('td', { class: 'num', 'data-testid': 'decision-reward' }, d.reward == null ? '–' : fmtNum(d.reward, 3)),
    h('td', { class: 'num hide-sm' }, String(d.rewards)),
    h('td', {}, h('span', { class: `tag status-${d.status}` }, d.status)),
  ));
  $('#decisions-table').tBodies[0].replaceChildren(...body);
  $('#decisions-empty').hidden = rows.length > 0;
  $('#decisions-table').hidden = rows.length === 0;
}
