// An evaluation job's result (issue 18) as the evaluation view shows it:
// read from the job object of GET /models/{id}/evaluations/{eid}
// (docs/http-api.md) into one plain shape, then drawn as the interval chart
// and the table of policies. The result carries the core report's form
// (per policy `diagnostics` and `results: [{estimator, outcome}]`); the
// shorter form of the original contract (`estimators: {ips: {value,
// interval}}`, diagnostics beside them) is read too.

import { fmtNum } from './api.js';
import { intervalChart } from './charts.js';
import { h, fmtInt } from './ui.js';

const ESTIMATORS = {
  ips: 'IPS', snips: 'SNIPS', doubly_robust: 'DR', dr: 'DR',
  per_decision_wis: 'PD-WIS', wis: 'PD-WIS', per_decision_dr: 'PD-DR',
};

const KINDS = {
  greedy: 'Greedy', exploring: 'Exploring', uniform: 'Uniform random', logged: 'Logged behaviour', baseline: 'Baseline',
};

/** Short names of the configuration fields a candidate changes. */
export const CONFIG_LABELS = {
  learning_rate: 'α', discount_factor: 'γ', epsilon: 'ε', epsilon_decay: 'ε decay', min_epsilon: 'min ε',
  initial_q: 'initial Q', algorithm: 'algorithm', exploration: 'exploration', temperature: 'temperature', seed: 'seed',
};

/** "α 0.05 · ε 0.1" for a candidate's configuration (fields in the form's order). */
export function configText(config) {
  const order = Object.keys(CONFIG_LABELS);
  const rank = (k) => (order.includes(k) ? order.indexOf(k) : order.length);
  const parts = Object.entries(config || {}).sort(([a], [b]) => rank(a) - rank(b))
    .map(([k, v]) => `${CONFIG_LABELS[k] || k} ${v}`);
  return parts.length ? parts.join(' · ') : 'the model’s own configuration';
}

/** How a policy is named on screen. */
export function policyLabel(spec) {
  if (spec?.kind === 'candidate') return `Candidate “${spec.name}”`;
  return KINDS[spec?.kind] || String(spec?.kind ?? 'policy');
}

function interval(iv) {
  if (!iv || !Number.isFinite(iv.low) || !Number.isFinite(iv.high)) return null;
  return { low: iv.low, high: iv.high, method: iv.method || null };
}

/** One estimator's answer: {key, label, value, ci, bound, insufficient}. */
function estimate(key, e) {
  const out = { key, label: ESTIMATORS[key] || key, value: null, ci: null, bound: null, insufficient: null };
  let o = e?.outcome ?? e;
  if (!o) { out.insufficient = { reason: 'no_data' }; return out; }
  if (o.insufficient_support) o = { kind: 'insufficient_support', ...o.insufficient_support };
  if (o.kind === 'insufficient_support' || !Number.isFinite(o.value)) {
    out.insufficient = { ...o };
    delete out.insufficient.kind;
    return out;
  }
  out.value = o.value;
  out.ci = interval(o.ci ?? o.interval);
  out.bound = interval(o.bound ?? o.bernstein);
  return out;
}

/** Why an estimator gives no number, in words. */
export function insufficientText(ins) {
  switch (ins?.reason) {
    case 'low_coverage': return `coverage ${fmtNum(ins.coverage, 3)} below ${fmtNum(ins.min, 3)}`;
    case 'low_effective_sample_size': return `effective sample size ${fmtNum(ins.ess, 1)} below ${fmtNum(ins.min, 1)}`;
    case 'no_data': return 'no decision with a known reward';
    default: return ins?.reason ? String(ins.reason).replace(/_/g, ' ') : '';
  }
}

/** The result of a job in one plain shape (null when it has none). */
export function readResult(result) {
  if (!result) return null;
  const policies = (result.policies || []).map((p) => {
    const spec = p.policy || {};
    const d = p.diagnostics || p;
    const estimators = Array.isArray(p.results)
      ? p.results.map((r) => estimate(r.estimator, r))
      : Object.entries(p.estimators || {}).map(([k, v]) => estimate(k, v));
    return {
      spec,
      label: policyLabel(spec),
      error: p.error || null,
      ess: d.ess ?? null,
      support: d.support ?? null,
      coverage: d.coverage ?? null,
      maxWeight: d.max_weight ?? null,
      loggedMean: d.logged_mean ?? null,
      estimators,
      replay: p.replay || null,
    };
  });
  const lr = result.logged_reward;
  const mean = lr?.mean ?? policies.find((p) => p.loggedMean != null)?.loggedMean ?? null;
  const li = interval(lr?.interval);
  return {
    mode: result.mode || (result.episodes != null ? 'episodes' : 'one_step'),
    decisions: result.decisions ?? null,
    episodes: result.episodes ?? null,
    skipped: result.skipped_episodes ?? null,
    truncated: !!result.truncated,
    logged: mean == null ? null : { mean, low: li?.low ?? null, high: li?.high ?? null },
    policies,
  };
}

const pct = (x) => (x == null ? '–' : `${fmtNum(x * 100, 1)} %`);

function estimateCell(e) {
  if (e.insufficient) {
    return h('div', { class: 'eval-est', 'data-testid': 'eval-estimate', 'data-estimator': e.key, 'data-value': '' },
      h('span', { class: 'eval-est-name' }, e.label),
      h('span', { class: 'tag eval-insufficient', 'data-testid': 'eval-insufficient' }, 'insufficient support'),
      ' ', h('span', { class: 'muted small' }, insufficientText(e.insufficient)));
  }
  const ci = e.ci ? ` [${fmtNum(e.ci.low, 3)}, ${fmtNum(e.ci.high, 3)}]` : '';
  const bound = e.bound ? h('span', { class: 'muted small', title: 'empirical-Bernstein bound' }, ` bound [${fmtNum(e.bound.low, 3)}, ${fmtNum(e.bound.high, 3)}]`) : null;
  return h('div', { class: 'eval-est', 'data-testid': 'eval-estimate', 'data-estimator': e.key, 'data-value': e.value },
    h('span', { class: 'eval-est-name' }, e.label),
    h('strong', {}, fmtNum(e.value, 3)), h('span', { class: 'eval-ci' }, ci), bound);
}

/**
 * Draws a read result into the view: the summary line, the chart and the
 * table; `onApply(policy)` is called by a candidate's Apply button.
 */
export function renderResult(root, r, onApply) {
  const { summary, chart, table } = root;
  const units = r.mode === 'episodes'
    ? `${fmtInt(r.episodes ?? 0)} episodes (${fmtInt(r.decisions ?? 0)} decisions${r.skipped ? `, ${fmtInt(r.skipped)} unfinished episodes left out` : ''})`
    : `${fmtInt(r.decisions ?? 0)} decisions, one step each`;
  const logged = r.logged
    ? `logged reward ${fmtNum(r.logged.mean, 3)}${r.logged.low != null ? ` [${fmtNum(r.logged.low, 3)}, ${fmtNum(r.logged.high, 3)}]` : ''}`
    : 'no logged reward';
  summary.textContent = `${units}; ${logged}${r.truncated ? '; the log was longer than the plan evaluates: the newest decisions were used' : ''}.`;
  const rows = [];
  for (const p of r.policies) {
    for (const e of p.estimators) {
      rows.push({ policy: p.spec.kind === 'candidate' ? `“${p.spec.name}”` : p.label, estimator: e.label, value: e.value, low: e.ci?.low ?? null, high: e.ci?.high ?? null });
    }
  }
  intervalChart(chart, rows, r.logged);
  table.tBodies[0].replaceChildren(...r.policies.map((p) => {
    const spec = p.spec;
    const candidate = spec.kind === 'candidate';
    const name = h('td', {}, h('strong', {}, p.label),
      candidate ? h('div', { class: 'muted small' }, configText(spec.config)) : null,
      p.replay?.learned != null ? h('div', { class: 'muted small' }, `replayed ${fmtInt(p.replay.learned)} transitions`) : null);
    const ests = p.error
      ? h('td', { class: 'eval-error-cell', 'data-testid': 'eval-policy-error' }, h('span', { class: 'tag eval-insufficient' }, p.error.code), ' ', p.error.message)
      : h('td', {}, ...p.estimators.map(estimateCell));
    const apply = candidate
      ? h('button', { type: 'button', class: 'btn btn-secondary btn-small', 'data-testid': 'eval-apply', onclick: () => onApply(p) }, 'Apply')
      : null;
    return h('tr', { 'data-testid': 'eval-policy-row', 'data-kind': spec.kind, 'data-name': spec.name ?? '' },
      name, ests,
      h('td', { class: 'num', 'data-testid': 'eval-ess', 'data-value': p.ess ?? '' }, fmtNum(p.ess, 1)),
      h('td', { class: 'num', 'data-testid': 'eval-support', 'data-value': p.support ?? '' }, pct(p.support)),
      h('td', { class: 'num hide-sm', 'data-testid': 'eval-coverage' }, pct(p.coverage)),
      h('td', { class: 'num hide-sm', 'data-testid': 'eval-max-weight' }, fmtNum(p.maxWeight, 2)),
      h('td', {}, apply));
  }));
}
