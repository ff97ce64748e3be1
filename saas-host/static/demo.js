// The gridworld demo of the Operate page: it trains the selected model from the
// browser (gridworld.js plays the episodes) and draws its greedy policy.

import { api, fmtNum } from './api.js';
import { scheduleUsageRefresh } from './dashboard.js';
import { runDemo, renderGrid, ACTION_NAMES as GRID_ACTIONS } from './gridworld.js';
import { S } from './state.js';
import { $, h, toast, fmtInt } from './ui.js';

// Called when a run ends (the Operate page reloads the model's status then).
let afterRun = () => {};

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

export function renderDemoInfo() {
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
  afterRun();
  renderDemoInfo();
}

export function stopDemo() {
  if (S.demo) S.demo.controller.abort();
}

export function renderDemoGrid() {
  if (!S.selected) return;
  renderGrid($('#demo-grid'), S.qIndex, S.selected.n_actions, S.demoAgent, demoSize());
}

export function wireDemo(onRunEnd) {
  afterRun = onRunEnd;
  $('#demo-run').addEventListener('click', startDemo);
  $('#demo-stop').addEventListener('click', stopDemo);
  $('#demo-budget').addEventListener('input', () => { S.demoBudgetTouched = true; renderDemoInfo(); });
  $('#demo-size').addEventListener('change', () => { S.demoSizeTouched = true; renderDemoGrid(); renderDemoInfo(); });
}
