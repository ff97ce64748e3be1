// The Operate page: the model picker, predict (the chosen action and its
// Q-values) and feedback (one update); live.js keeps the model's view current
// and demo.js runs the gridworld.

import { api, parseState, stateToInput, fmtNum } from './api.js';
import { refreshDecisions } from './decisions.js';
import { renderDemoInfo, wireDemo } from './demo.js';
import { renderModelSelect, selectModel, scheduleStatusRefresh, renderStats, wireLive } from './live.js';
import { S } from './state.js';
import { $, h, showError, actionLabel, withBusy } from './ui.js';


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
      if (res.decision_id) refreshDecisions(); // logged: show it in the decisions view
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
  $('#pred-decision-box').hidden = !res.decision_id;
  $('#pred-decision').textContent = res.decision_id ? `${res.decision_id} · p = ${fmtNum(res.probability, 3)}` : '';
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

/** `#/operate` and `#/operate/{id}`: the given model, else the one shown last, else the first. */
export async function showOperate(id) {
  renderModelSelect();
  const target = id || S.selectedId || S.dashboard?.models?.[0]?.id || S.models[0]?.id;
  if (!target) return;
  if (!id) { history.replaceState(null, '', `#/operate/${encodeURIComponent(target)}`); }
  S.selectedId === target && S.es ? renderDemoInfo() : await selectModel(target);
}

export function wireOperate() {
  $('#model-select').addEventListener('change', (e) => { location.hash = `#/operate/${encodeURIComponent(e.target.value)}`; });
  $('#predict-form').addEventListener('submit', onPredict);
  $('#feedback-form').addEventListener('submit', onFeedback);
  wireDemo(() => scheduleStatusRefresh(300));
  wireLive();
}
