// The sign-in / create-account card.

import { api, session } from './api.js';
import { S } from './state.js';
import { $, toast, showError, withBusy } from './ui.js';

export function setAuthMode(mode) {
  S.authMode = mode;
  $('#tab-login').setAttribute('aria-selected', String(mode === 'login'));
  $('#tab-register').setAttribute('aria-selected', String(mode === 'register'));
  $('#auth-submit').textContent = mode === 'login' ? 'Sign in' : 'Create account';
  $('#auth-password').setAttribute('autocomplete', mode === 'login' ? 'current-password' : 'new-password');
  showError($('#auth-error'), null);
}

async function onAuthSubmit(ev, onSignedIn) {
  ev.preventDefault();
  const email = $('#auth-email').value.trim();
  const password = $('#auth-password').value;
  const box = $('#auth-error');
  showError(box, null);
  await withBusy($('#auth-submit'), async () => {
    try {
      if (S.authMode === 'register') {
        const res = await api.register(email, password);
        session.set(res.access_token, res.user?.email || email);
        toast('Account created. A first model is ready for you.');
      } else {
        const res = await api.login(email, password);
        session.set(res.access_token, email);
      }
      $('#auth-password').value = '';
      await onSignedIn();
    } catch (e) {
      showError(box, e);
    }
  });
}

/** `onSignedIn` opens the app once a token is kept; its errors are shown on the card. */
export function wireAuth(onSignedIn) {
  $('#tab-login').addEventListener('click', () => setAuthMode('login'));
  $('#tab-register').addEventListener('click', () => setAuthMode('register'));
  $('.segmented').addEventListener('keydown', (e) => {
    if (e.key === 'ArrowLeft' || e.key === 'ArrowRight') {
      const next = S.authMode === 'login' ? 'register' : 'login';
      setAuthMode(next);
      $(`#tab-${next}`).focus();
    }
  });
  $('#auth-form').addEventListener('submit', (ev) => onAuthSubmit(ev, onSignedIn));
}
