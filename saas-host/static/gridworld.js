// The built-in demo: an n×n gridworld (3×3 to 5×5, 4×4 by default on plans with
// room for it) trained from the browser through POST /update/batch. Actions are
// chosen here from the model's own Q-values (ε-greedy), so only the updates are
// metered, never a predict. The agent starts at [0, 0]; the goal is the far corner.

import { ApiError, stateKey } from './api.js';

export const START = [0, 0];
export const goalOf = (size) => [size - 1, size - 1];
export const STEP_REWARD = -0.04;
export const GOAL_REWARD = 1;
export const ACTION_NAMES = ['up', 'down', 'left', 'right'];
const MOVES = [[-1, 0], [1, 0], [0, -1], [0, 1]];
const ARROWS = ['↑', '↓', '←', '→'];

/** One step of the environment. Bumping into a wall leaves the agent where it is. */
export function envStep([r, c], action, size = 4) {
  const [dr, dc] = MOVES[action];
  const nr = Math.min(size - 1, Math.max(0, r + dr));
  const nc = Math.min(size - 1, Math.max(0, c + dc));
  const done = nr === size - 1 && nc === size - 1;
  return { next: [nr, nc], reward: done ? GOAL_REWARD : STEP_REWARD, done };
}

const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

/**
 * Runs the demo. `qIndex` is the page's shared Map(stateKey → q_values), kept up to date
 * by the caller from /status and the event stream; the runner also writes the q_value of
 * every update the server returns into it.
 *
 * opts: {api, model, size, budget, maxSteps, qIndex, signal, chunk, delayMs, onProgress(info)}
 * Resolves to {sent, episodes, stoppedBy: 'budget'|'abort'|'error', error?}.
 */
export async function runDemo(opts) {
  const { api, model, qIndex, signal } = opts;
  const budget = Math.max(0, Math.floor(opts.budget));
  const maxSteps = Math.max(2, Math.floor(opts.maxSteps || 25));
  const size = Math.min(8, Math.max(2, Math.floor(opts.size || 4)));
  const chunk = opts.chunk || 10;
  const delayMs = opts.delayMs ?? 300;
  const nA = model.n_actions;
  const init = Number(model.initial_q) || 0;
  const alpha = Number(model.learning_rate) || 0.1;
  const gamma = Number(model.discount_factor ?? 0.95);
  let epsilon = Number(model.stats?.epsilon ?? model.epsilon ?? 0.1);
  const progress = opts.onProgress || (() => {});

  // Local working copy so the agent does not loop inside a chunk; replaced by the
  // server's values as soon as each batch answers.
  const local = new Map();
  const q = (s) => {
    const k = stateKey(s);
    if (!local.has(k)) local.set(k, (qIndex.get(k) || new Array(nA).fill(init)).slice());
    return local.get(k);
  };
  const choose = (s) => {
    if (Math.random() < epsilon) return Math.floor(Math.random() * nA);
    const v = q(s);
    const best = Math.max(...v);
    const ties = [];
    v.forEach((x, i) => { if (x >= best - 1e-12) ties.push(i); });
    return ties[Math.floor(Math.random() * ties.length)];
  };

  let sent = 0;
  let episodes = 0;
  let pending = [];
  let state = START.slice();
  let action = choose(state);
  let steps = 0;
  let ret = 0;
  const returns = [];

  const flush = async () => {
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    const res = await api.updateBatch({ model_id: model.id, experiences: batch });
    sent += batch.length;
    const results = (res && res.results) || [];
    batch.forEach((e, i) => {
      const r = results[i];
      if (!r) return;
      const k = stateKey(e.state);
      const row = (qIndex.get(k) || new Array(nA).fill(init)).slice();
      row[e.action] = r.q_value;
      qIndex.set(k, row);
      local.set(k, row.slice());
      if (typeof r.epsilon === 'number') epsilon = r.epsilon;
    });
  };

  try {
    while (sent + pending.length < budget) {
      if (signal?.aborted) { await flush(); return { sent, episodes, returns, stoppedBy: 'abort' }; }
      const { next, reward, done } = envStep(state, action, size);
      steps += 1;
      ret += reward;
      const truncated = !done && steps >= maxSteps;
      const nextAction = choose(next);
      pending.push({
        state: state.slice(), action, reward, next_state: next.slice(), done, truncated, next_action: nextAction,
      });
      // local TD step so the rest of this chunk sees the effect
      const row = q(state);
      const target = done ? reward : reward + gamma * Math.max(...q(next));
      row[action] += alpha * (target - row[action]);
      progress({ agent: next, sent: sent + pending.length, episodes, steps, lastReturn: returns.at(-1) ?? null });
      if (done || truncated) {
        episodes += 1;
        returns.push({ ret, steps, reachedGoal: done });
        await flush();
        progress({ agent: START, sent, episodes, steps, lastReturn: returns.at(-1), episodeEnded: true });
        state = START.slice();
        action = choose(state);
        steps = 0;
        ret = 0;
        await sleep(delayMs, signal);
      } else {
        state = next;
        action = nextAction;
        if (pending.length >= chunk) {
          await flush();
          progress({ agent: state, sent, episodes, steps, lastReturn: returns.at(-1) ?? null });
          await sleep(delayMs, signal);
        }
      }
    }
    await flush();
    return { sent, episodes, returns, stoppedBy: 'budget' };
  } catch (e) {
    const err = e instanceof ApiError ? e : new ApiError(0, 'client_error', String(e && e.message || e));
    return { sent, episodes, returns, stoppedBy: 'error', error: err };
  }
}

/** Draws the grid with the greedy action per cell (from qIndex) and the agent. */
export function renderGrid(container, qIndex, nActions, agent, n = 4) {
  const NS = 'http://www.w3.org/2000/svg';
  const size = Math.round(208 / n);
  const pad = 2;
  const ROWS = n;
  const COLS = n;
  const GOAL = goalOf(n);
  const W = COLS * size + pad * 2;
  const H = ROWS * size + pad * 2;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('width', String(W));
  svg.setAttribute('height', String(H));
  const mk = (name, attrs, text) => {
    const e = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text != null) e.textContent = text;
    return e;
  };
  for (let r = 0; r < ROWS; r++) {
    for (let c = 0; c < COLS; c++) {
      const x = pad + c * size;
      const y = pad + r * size;
      const isGoal = r === GOAL[0] && c === GOAL[1];
      const isStart = r === START[0] && c === START[1];
      svg.append(mk('rect', {
        x: x + 1, y: y + 1, width: size - 2, height: size - 2, rx: 6,
        fill: isGoal ? '#dcfce7' : isStart ? '#eef0fe' : '#f7f8fb', stroke: '#e2e5ec',
      }));
      if (isGoal) {
        svg.append(mk('text', { x: x + size / 2, y: y + size / 2 + 6, 'text-anchor': 'middle', 'font-size': 16, fill: '#15803d', 'font-weight': 700 }, '★'));
        continue;
      }
      const v = qIndex.get(stateKey([r, c]));
      if (v && nActions === 4) {
        const best = Math.max(...v);
        const learned = v.some((x) => x !== v[0]);
        if (learned) {
          const a = v.indexOf(best);
          svg.append(mk('text', { x: x + size / 2, y: y + size / 2 + 7, 'text-anchor': 'middle', 'font-size': n > 4 ? 16 : 20, fill: '#4f46e5', 'font-weight': 700 }, ARROWS[a]));
        }
      }
      if (isStart) svg.append(mk('text', { x: x + 5, y: y + 13, 'font-size': 9, fill: '#5d6678' }, 'start'));
    }
  }
  if (agent && agent[0] < n && agent[1] < n) {
    const [r, c] = agent;
    svg.append(mk('circle', { cx: pad + c * size + size / 2, cy: pad + r * size + size / 2, r: 9, fill: '#f59e0b', 'fill-opacity': 0.85, stroke: '#b45309', 'stroke-width': 1.5 }));
  }
  container.replaceChildren(svg);
}
