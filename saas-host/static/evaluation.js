// The Operate page's offline evaluation (issue 18), for a model that logs
// decisions: pick policies and candidate configurations and a time range,
// start a job (POST /models/{id}/evaluations), follow it while it is queued
// or running (polling GET .../evaluations/{eid}; Cancel is DELETE), then its
// result (evalresult.js): each policy's estimates with their intervals
// against the logged reward, effective sample size, support. Past
// evaluations can be reopened; a candidate's Apply button PATCHes the model
// with the candidate's configuration.

import { api } from './api.js';
import { configText, readResult, renderResult } from './evalresult.js';
import { scheduleStatusRefresh } from './live.js';
import { S } from './state.js';
import { $, $$, h, toast, showError, fmtDate, fmtInt, confirmDialog, withBusy } from './ui.js';

const POLL_MS = 1000;
const HISTORY = 10; // past evaluations listed per page
const RANGES = { day: 24 * 3600 * 1000, week: 7 * 24 * 3600 * 1000 };
const ACTIVE = new Set(['queued', 'running']);
const NUMBERS = ['learning_rate', 'discount_factor', 'epsilon'];
const CHOICES = {
  algorithm: [['q_learning', 'Q-learning'], ['sarsa', 'SARSA'], ['expected_sarsa', 'Expected SARSA'], ['double_q_learning', 'Double Q-learning']],
  exploration: [['epsilon_greedy', 'ε-greedy'], ['softmax', 'Softmax']],
};

let shownId = null; // the model on screen
let job = null; // the job on screen
let timer = null;
let history = []; // the past evaluations listed
let candidates = 0; // candidate rows ever added (their ids)

/** Shows the evaluation view for `model` (hidden when it logs no decisions). */
export function showEvaluation(model) {
  const on = !!(model && model.decisions);
  $('#evaluation-card').hidden = !on;
  if (!on) { stopEvaluation(); shownId = null; return; }
  if (shownId !== model.id) {
    shownId = model.id;
    stopEvaluation();
    job = null;
    history = [];
    $('#eval-candidates').replaceChildren();
    showError($('#eval-error'), null);
    setApplyStatus(null);
    renderJob();
    // The last model's past evaluations leave at once: opening one of them
    // under this model would be a 404.
    $('#eval-history').tBodies[0].replaceChildren();
    $('#eval-history').hidden = true;
    $('#eval-history-empty').hidden = false;
    $('#eval-history-empty').textContent = 'Loading past evaluations…';
    loadHistory(false);
  } else if (job && ACTIVE.has(job.status) && !timer) {
    timer = setTimeout(poll, POLL_MS);
  }
  for (const row of $$('.eval-candidate')) placeholders(row, model);
}

/** Stops following a job (another page, another model, signed out). */
export function stopEvaluation() {
  clearTimeout(timer);
  timer = null;
}

// ------------------------------------------------------------------ the form

function placeholders(row, model) {
  for (const k of NUMBERS) $(`[data-field="${k}"]`, row).placeholder = model[k] == null ? '' : String(model[k]);
  for (const k of Object.keys(CHOICES)) {
    const same = $(`[data-field="${k}"] option[value=""]`, row);
    const current = CHOICES[k].find(([v]) => v === model[k]);
    same.textContent = `same (${current ? current[1] : model[k] ?? '–'})`;
  }
}

function addCandidate() {
  candidates += 1;
  const n = candidates;
  const field = (key, label, input) => h('div', { class: 'field' }, h('label', { for: `eval-c${n}-${key}` }, label), input);
  const num = (key, label) => field(key, label, h('input', {
    id: `eval-c${n}-${key}`, type: 'number', step: 'any', inputmode: 'decimal', 'data-field': key,
  }));
  const choice = (key, label) => field(key, label, h('select', { id: `eval-c${n}-${key}`, 'data-field': key },
    h('option', { value: '' }, 'same'), ...CHOICES[key].map(([v, t]) => h('option', { value: v }, t))));
  const row = h('div', { class: 'eval-candidate', 'data-testid': 'eval-candidate' },
    field('name', 'Name', h('input', { id: `eval-c${n}-name`, type: 'text', maxlength: 100, value: `candidate ${n}`, 'data-field': 'name' })),
    num('learning_rate', 'Learning rate α'), num('discount_factor', 'Discount γ'), num('epsilon', 'Epsilon ε'),
    choice('algorithm', 'Algorithm'), choice('exploration', 'Exploration'),
    h('button', { type: 'button', class: 'btn btn-ghost btn-small', 'aria-label': `Remove candidate ${n}`, onclick: () => row.remove() }, 'Remove'));
  $('#eval-candidates').append(row);
  if (S.selected) placeholders(row, S.selected);
  $('input', row).focus();
}

function readCandidate(row) {
  const config = {};
  for (const k of NUMBERS) {
    const raw = $(`[data-field="${k}"]`, row).value.trim();
    if (raw === '') continue;
    const v = Number(raw);
    config[k] = Number.isFinite(v) ? v : raw; // the server names a bad field
  }
  for (const k of Object.keys(CHOICES)) {
    const v = $(`[data-field="${k}"]`, row).value;
    if (v) config[k] = v;
  }
  return { kind: 'candidate', name: $('[data-field="name"]', row).value.trim(), config };
}

function readForm() {
  const policies = $$('input[name="eval-policy"]:checked').map((c) => ({ kind: c.value }));
  policies.push(...$$('.eval-candidate').map(readCandidate));
  if (policies.length === 0) throw new Error('Pick at least one policy or add a candidate configuration.');
  const body = { policies };
  const span = RANGES[$('#eval-range').value];
  if (span) body.since = Date.now() - span;
  return body;
}

async function onStart(ev) {
  ev.preventDefault();
  const box = $('#eval-error');
  showError(box, null);
  let body;
  try { body = readForm(); } catch (e) { showError(box, e); return; }
  const id = shownId;
  await withBusy($('#eval-start'), async () => {
    try {
      const created = await api.createEvaluation(id, body);
      if (id !== shownId) return;
      track(created);
      history = [created, ...history.filter((j) => j.id !== created.id)];
      renderHistory();
    } catch (e) {
      if (id === shownId) showError(box, e);
    }
  });
}

// ------------------------------------------------------------------ a job

function track(j) {
  stopEvaluation();
  job = j;
  renderJob();
  if (ACTIVE.has(j.status)) timer = setTimeout(poll, POLL_MS);
}

async function poll() {
  timer = null;
  const m = S.selected;
  if (!job || S.view !== 'operate' || !m || m.id !== shownId) return;
  const id = shownId;
  const eid = job.id;
  try {
    const j = await api.getEvaluation(id, eid);
    if (id !== shownId || job?.id !== eid) return;
    job = j;
    renderJob();
    if (!ACTIVE.has(j.status)) updateHistory(j);
  } catch (e) {
    if (id !== shownId || job?.id !== eid) return;
    $('#eval-job-text').textContent = `not refreshed: ${e.message}`;
    if (e.status === 404) { job = { ...job, status: 'deleted' }; renderJob(); return; }
  }
  if (ACTIVE.has(job.status) && !timer) timer = setTimeout(poll, POLL_MS);
}

function statusText(j) {
  const p = j.progress || {};
  const read = p.decisions_read ?? 0;
  const total = p.decisions_total ?? 0;
  switch (j.status) {
    case 'queued': return `waiting for a worker (created ${fmtDate(j.created_at, true)})`;
    case 'running': return total > 0 ? `read ${fmtInt(read)} of ${fmtInt(total)} decisions` : `read ${fmtInt(read)} decisions`;
    case 'done': return `finished ${fmtDate(j.finished_at, true)}`;
    case 'failed': return `failed: ${j.error?.message || 'no reason given'}${j.error?.code ? ` (${j.error.code})` : ''}`;
    case 'cancelled': return 'cancelled';
    case 'deleted': return 'deleted';
    default: return '';
  }
}

function renderJob() {
  const box = $('#eval-job');
  box.hidden = !job;
  if (!job) return;
  box.dataset.evalId = job.id;
  box.dataset.status = job.status;
  const tag = $('#eval-job-status');
  tag.textContent = job.status;
  tag.className = `tag eval-status-${job.status}`;
  $('#eval-job-text').textContent = statusText(job);
  $('#eval-job-policies').textContent = describePolicies(job.request?.policies);
  const active = ACTIVE.has(job.status);
  $('#eval-cancel').hidden = !active;
  const p = job.progress || {};
  const frac = job.status === 'done' ? 1 : p.decisions_total > 0 ? Math.min(1, p.decisions_read / p.decisions_total) : 0;
  $('#eval-progress').hidden = !active;
  $('#eval-progress > span').style.width = `${(frac * 100).toFixed(1)}%`;
  const r = job.status === 'done' ? readResult(job.result) : null;
  $('#eval-result').hidden = !r;
  if (r) {
    renderResult({ summary: $('#eval-summary'), chart: $('#eval-chart'), table: $('#eval-table') }, r, applyCandidate);
  }
}

function describePolicies(policies) {
  return (policies || []).map((p) => (p.kind === 'candidate' ? `“${p.name}”` : p.kind)).join(', ');
}

async function onCancel() {
  if (!job) return;
  const id = shownId;
  const eid = job.id;
  await withBusy($('#eval-cancel'), async () => {
    try {
      await api.deleteEvaluation(id, eid);
      if (id !== shownId || job?.id !== eid) return;
      stopEvaluation();
      let j;
      try { j = await api.getEvaluation(id, eid); } catch { j = { ...job, status: 'cancelled' }; }
      if (id !== shownId || job?.id !== eid) return;
      job = j;
      renderJob();
      updateHistory(j);
      toast('Evaluation cancelled.');
    } catch (e) {
      toast(e.message, 'error');
    }
  });
}

// ------------------------------------------------------------------ past evaluations

async function loadHistory(more) {
  const id = shownId;
  const before = more && history.length ? history[history.length - 1].id : null;
  try {
    const page = await api.listEvaluations(id, HISTORY, before);
    if (id !== shownId) return;
    const list = page?.evaluations || [];
    history = more ? [...history, ...list] : list;
    $('#eval-history-more').hidden = list.length < HISTORY;
    renderHistory();
    if (!more && !job && list[0] && ACTIVE.has(list[0].status)) track(list[0]); // follow one still running
  } catch (e) {
    if (id === shownId) $('#eval-history-empty').textContent = `Past evaluations not loaded: ${e.message}`;
  }
}

function updateHistory(j) {
  history = history.map((x) => (x.id === j.id ? j : x));
  renderHistory();
}

function renderHistory() {
  const rows = history.map((j) => h('tr', { 'data-testid': 'eval-history-row', 'data-eval-id': j.id, 'data-status': j.status },
    h('td', { class: 'small' }, fmtDate(j.created_at, true)),
    h('td', {}, h('span', { class: `tag eval-status-${j.status}` }, j.status)),
    h('td', { class: 'eval-history-policies' }, describePolicies(j.request?.policies)),
    h('td', { class: 'num hide-sm' }, j.result?.decisions == null ? '–' : fmtInt(j.result.decisions)),
    h('td', {}, h('div', { class: 'row-actions' },
      h('button', { type: 'button', class: 'btn btn-secondary btn-small', 'data-action': 'open', onclick: () => openJob(j) }, 'Open'),
      ACTIVE.has(j.status) ? null
        : h('button', { type: 'button', class: 'btn btn-danger-ghost btn-small', 'data-action': 'delete', onclick: () => deleteJob(j) }, 'Delete'))),
  ));
  $('#eval-history').tBodies[0].replaceChildren(...rows);
  $('#eval-history').hidden = rows.length === 0;
  $('#eval-history-empty').hidden = rows.length > 0;
  if (rows.length === 0) $('#eval-history-empty').textContent = 'No evaluations of this model yet.';
}

async function openJob(j) {
  const id = shownId;
  try {
    const fresh = await api.getEvaluation(id, j.id);
    if (id === shownId) { track(fresh); $('#eval-job').scrollIntoView({ block: 'nearest' }); }
  } catch (e) {
    toast(e.message, 'error');
  }
}

async function deleteJob(j) {
  const ok = await confirmDialog({
    title: 'Delete this evaluation?',
    text: `Its result (${describePolicies(j.request?.policies)}) is deleted for good.`,
    ok: 'Delete evaluation',
  });
  if (!ok) return;
  try {
    await api.deleteEvaluation(shownId, j.id);
    history = history.filter((x) => x.id !== j.id);
    if (job?.id === j.id) { job = null; stopEvaluation(); renderJob(); }
    renderHistory();
  } catch (e) {
    toast(e.message, 'error');
  }
}

// ------------------------------------------------------------------ apply a candidate

function setApplyStatus(text, state, code) {
  const el = $('#eval-apply-status');
  el.hidden = !text;
  el.textContent = text || '';
  el.dataset.state = state || '';
  if (code) el.dataset.code = code; else delete el.dataset.code;
}

async function applyCandidate(p) {
  const m = S.selected;
  if (!m || m.id !== shownId) return;
  const config = p.spec.config || {};
  const name = p.spec.name;
  const ok = await confirmDialog({
    title: `Apply “${name}” to ${m.name}?`,
    text: Object.keys(config).length
      ? `The model's configuration becomes ${configText(config)}. Its Q-table stays; it learns and explores with the new settings from now on.`
      : 'This candidate changes nothing in the model’s configuration.',
    ok: 'Apply',
  });
  if (!ok) return;
  if (Object.keys(config).length === 0) { setApplyStatus(`“${name}” changes nothing: not applied.`, 'noop'); return; }
  try {
    const updated = await api.patchModel(m.id, config);
    S.models = S.models.map((x) => (x.id === updated.id ? { ...x, ...updated } : x));
    setApplyStatus(`Applied “${name}”: ${configText(config)}.`, 'ok');
    toast(`Applied “${name}” to ${m.name}.`);
    scheduleStatusRefresh(0);
  } catch (e) {
    setApplyStatus(`Not applied: ${e.message}`, 'error', e.code);
  }
}

export function wireEvaluation() {
  $('#eval-form').addEventListener('submit', onStart);
  $('#eval-add-candidate').addEventListener('click', addCandidate);
  $('#eval-cancel').addEventListener('click', onCancel);
  $('#eval-history-more').addEventListener('click', () => loadHistory(true));
}
