// The Dashboard page (plan, usage this month, the models) and the usage pill and
// quota notice in the header, all drawn from GET /dashboard.

import { api, setRateLimit, fmtNum } from './api.js';
import { usageChart } from './charts.js';
import { S } from './state.js';
import { $, h, toast, fmtDate, fmtInt, todayUtc } from './ui.js';

// Called after every load, so the page on screen can redraw what depends on it.
let afterLoad = () => {};
export function afterDashboardLoad(fn) { afterLoad = fn; }

let usageTimer = null;
let usageLast = 0;
export function scheduleUsageRefresh() {
  if (usageTimer) return;
  const wait = Math.max(700, 1500 - (Date.now() - usageLast));
  usageTimer = setTimeout(async () => {
    usageTimer = null;
    usageLast = Date.now();
    try { await loadDashboard(); } catch { /* shown elsewhere */ }
  }, wait);
}

export async function loadDashboard() {
  const d = await api.dashboard();
  S.dashboard = d;
  S.models = d.models || [];
  setRateLimit(d.limits?.rate_per_second, d.limits?.burst);
  if (d.user?.email) { $('#user-email').textContent = d.user.email; }
  renderUsage();
  renderDashboard();
  afterLoad();
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
    notice.textContent = pct >= 1 && u.overage_allowed
      ? `You have used all ${fmtInt(limit)} calls of your ${tier} plan this month. Further calls are allowed and billed as overage (${fmtInt(u.overage ?? 0)} so far) until ${fmtDate(u.resets_at)} (UTC).`
      : pct >= 1
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

/** `#/dashboard`: the page is shown (the router made it visible). */
export function showDashboard() {
  renderDashboard();
  if (S.dashboard) usageChart($('#usage-chart'), S.dashboard.usage?.per_day || [], todayUtc());
}

export function wireDashboard() {
  $('#dash-refresh').addEventListener('click', () => loadDashboard().catch((e) => toast(e.message, 'error')));
}
