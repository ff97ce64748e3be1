// The plans page: every plan from GET /plans (name, price, quota, limits,
// features), the caller's marked, an Upgrade button per higher plan when a
// checkout URL is configured (it opens the payment provider's checkout), and
// a scheduled downgrade. A downgrade never deletes data: models over the plan
// are read-only until enough is deleted or changed (the models table says why).

import { api } from './api.js';
import { $, h, showError, fmtDate, fmtInt } from './ui.js';

const FEATURES = {
  advanced_algorithms: 'SARSA, expected SARSA, double Q-learning',
  decisions: 'Decision logging with delayed rewards',
};

function price(p) {
  if (p.monthly_cents === 0) return 'Free';
  const amount = (p.monthly_cents / 100).toFixed(2);
  return `${amount} ${p.currency} / month`;
}

function limit(v, unit) {
  return v == null ? `unlimited ${unit}` : `${fmtInt(v)} ${unit}`;
}

function card(plan) {
  const l = plan.limits;
  const features = Object.keys(FEATURES).map((f) => h('li', {
    class: plan.features.includes(f) ? 'yes' : 'no', 'data-feature': f,
  }, plan.features.includes(f) ? '✓ ' : '✗ ', FEATURES[f]));
  let action;
  if (plan.current) {
    action = h('span', { class: 'tier-badge', 'data-testid': 'plan-current' }, 'Your plan');
  } else if (plan.checkout_url) {
    action = h('a', {
      class: 'btn btn-primary', href: plan.checkout_url, rel: 'noopener', 'data-testid': 'plan-upgrade',
    }, `Upgrade to ${plan.name}`);
  } else {
    action = h('span', { class: 'muted small' }, '');
  }
  return h('article', {
    class: plan.current ? 'card plan-card plan-current' : 'card plan-card',
    'data-testid': 'plan-card', 'data-tier': plan.tier,
  },
    h('h2', {}, plan.name),
    h('p', { class: 'plan-price', 'data-testid': 'plan-price' }, price(plan.price)),
    h('ul', { class: 'plan-limits' },
      h('li', {}, limit(plan.quota, 'calls a month')),
      h('li', {}, limit(l.max_models, 'models')),
      h('li', {}, limit(l.max_states, 'states per model')),
      h('li', {}, `${fmtInt(l.rate_per_second)} requests/s (burst ${fmtInt(l.burst)})`)),
    h('ul', { class: 'plan-features' }, ...features),
    action);
}

async function loadPlans() {
  showError($('#plans-error'), null);
  try {
    const p = await api.plans();
    $('#plans-grid').replaceChildren(...p.plans.map(card));
    const pending = p.pending_downgrade;
    $('#plans-pending').hidden = !pending;
    if (pending) {
      $('#plans-pending').textContent =
        `Your plan changes to ${pending.tier} on ${fmtDate(pending.at, true)}.`;
    }
    $('#plans-no-checkout').hidden = p.checkout;
  } catch (e) {
    showError($('#plans-error'), e);
  }
}

/** `#/plans`. */
export const showPlans = loadPlans;
