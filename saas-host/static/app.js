// qlearn web dashboard. Plain ES modules, no framework, no build step; it calls
// only the public HTTP API (docs/http-api.md).
//
// This module signs in and out and routes `#/<page>` to one page module each:
// auth.js, dashboard.js, models.js, operate.js (with live.js, demo.js,
// decisions.js and evaluation.js),
// keys.js. Their shared state is state.js, their DOM helpers ui.js.

import { session, ApiError, setUnauthorizedHandler, setMeteredHandler } from './api.js';
import { setAuthMode, wireAuth } from './auth.js';
import { loadDashboard, scheduleUsageRefresh, afterDashboardLoad, showDashboard, wireDashboard } from './dashboard.js';
import { renderDemoInfo, stopDemo } from './demo.js';
import { showEvaluation, wireEvaluation } from './evaluation.js';
import { showKeys, wireKeys } from './keys.js';
import { showPlans } from './plans.js';
import { closeEvents, renderModelSelect } from './live.js';
import { renderModelsTable, showModels, wireModels } from './models.js';
import { showOperate, wireOperate } from './operate.js';
import { S } from './state.js';
import { $, $$, showError } from './ui.js';

// ------------------------------------------------------------------ session

function logout(message) {
  stopDemo();
  closeEvents();
  showEvaluation(null);
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
    case 'models':
      showView('models');
      if (!(await showModels(id, sub))) return;
      break;
    case 'operate':
      showView('operate');
      await showOperate(id);
      break;
    case 'keys':
      showView('keys');
      showKeys();
      break;
    case 'plans':
      showView('plans');
      showPlans();
      break;
    case 'dashboard':
    default:
      showView('dashboard');
      showDashboard();
      break;
  }
  // Move focus to the content when the view changed (as a page load would), not when
  // e.g. the model picker of the same view changed the address.
  if (S.view !== before && !$(`#view-${S.view}`).contains(document.activeElement)) {
    $('#main').focus({ preventScroll: true });
  }
}

// The page on screen redraws what a fresh GET /dashboard changes.
function refreshViewFromDashboard() {
  if (S.view === 'models') renderModelsTable();
  if (S.view === 'operate') { renderModelSelect(); renderDemoInfo(); }
}

// ------------------------------------------------------------------ start

function wire() {
  wireAuth(enterApp);
  $('#logout-btn').addEventListener('click', () => logout());
  wireDashboard();
  wireModels();
  wireKeys();
  wireOperate();
  wireEvaluation();
  afterDashboardLoad(refreshViewFromDashboard);
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
