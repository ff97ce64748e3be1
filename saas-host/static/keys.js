// The API keys page: list (with scope and expiry), create with a scope and an
// optional expiry (the full key is shown once), copy, revoke.

import { api } from './api.js';
import { S } from './state.js';
import { $, h, toast, showError, fmtDate, confirmDialog, withBusy } from './ui.js';

/** Offers the admin scope only to an admin (the server refuses it to anyone else). */
async function offerAdminScope() {
  let role = S.dashboard?.user?.role;
  if (!role) {
    try { role = (await api.me()).role; } catch { role = 'user'; }
  }
  const admin = $('#key-scope option[value="admin"]');
  admin.hidden = role !== 'admin';
  admin.disabled = role !== 'admin';
  if (admin.disabled && $('#key-scope').value === 'admin') $('#key-scope').value = 'full';
}

/** The expiry cell: the date, "never", or "expired" once past. */
function expiryCell(k) {
  if (!k.expires_at) return h('td', { 'data-testid': 'key-expires' }, h('span', { class: 'muted' }, 'never'));
  return h('td', { 'data-testid': 'key-expires', 'data-expires-at': k.expires_at },
    fmtDate(k.expires_at, true), k.active === false ? h('span', { class: 'muted' }, ' (expired)') : '');
}

async function loadKeys() {
  offerAdminScope();
  try {
    const keys = await api.listKeys();
    const tbody = $('#keys-table tbody');
    tbody.replaceChildren(...keys.map((k) => h('tr', { 'data-testid': 'key-row', 'data-key-id': k.id },
      h('td', {}, h('strong', {}, k.name)),
      h('td', { class: 'id' }, `${k.prefix}…`),
      h('td', { 'data-testid': 'key-scope' }, k.scope),
      expiryCell(k),
      h('td', { class: 'hide-sm' }, fmtDate(k.created_at, true)),
      h('td', { class: 'hide-sm' }, k.last_used_at ? fmtDate(k.last_used_at, true) : h('span', { class: 'muted' }, 'never')),
      h('td', {}, h('div', { class: 'row-actions' }, h('button', {
        type: 'button', class: 'btn btn-danger-ghost btn-small', 'data-action': 'revoke',
        onclick: () => revokeKey(k),
      }, 'Revoke'))),
    )));
    $('#keys-empty').hidden = keys.length > 0;
    $('#keys-table').hidden = keys.length === 0;
  } catch (e) {
    showError($('#key-error'), e);
  }
}

async function onKeySubmit(ev) {
  ev.preventDefault();
  showError($('#key-error'), null);
  const name = $('#key-name').value.trim();
  const scope = $('#key-scope').value;
  const days = $('#key-expiry').value.trim();
  if (days !== '' && !/^[0-9]+$/.test(days)) {
    showError($('#key-error'), new Error('Expiry: a whole number of days (1 to 3650), or empty for none.'));
    return;
  }
  await withBusy($('#key-create'), async () => {
    try {
      const k = await api.createKey(name, scope, days === '' ? null : Number(days));
      $('#key-value').value = k.key;
      $('#key-created').hidden = false;
      $('#key-name').value = '';
      $('#key-expiry').value = '';
      $('#key-value').focus();
      $('#key-value').select();
      await loadKeys();
    } catch (e) {
      showError($('#key-error'), e);
    }
  });
}

async function copyKey() {
  const input = $('#key-value');
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    try { document.execCommand('copy'); } catch { /* the text stays selected for a manual copy */ }
  }
  $('#key-copy').textContent = 'Copied';
  setTimeout(() => { $('#key-copy').textContent = 'Copy'; }, 2000);
}

async function revokeKey(k) {
  const ok = await confirmDialog({
    title: `Revoke “${k.name}”?`,
    text: 'Requests that use this key are refused from now on. This cannot be undone.',
    ok: 'Revoke key',
  });
  if (!ok) return;
  try {
    await api.deleteKey(k.id);
    toast(`Revoked “${k.name}”.`);
    await loadKeys();
  } catch (e) {
    toast(e.message, 'error');
  }
}

/** `#/keys`. */
export const showKeys = loadKeys;

export function wireKeys() {
  $('#key-form').addEventListener('submit', onKeySubmit);
  $('#key-copy').addEventListener('click', copyKey);
  $('#key-dismiss').addEventListener('click', () => { $('#key-created').hidden = true; $('#key-value').value = ''; });
}
