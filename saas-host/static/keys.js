// The API keys page: list, create (the full key is shown once), copy, revoke.

import { api } from './api.js';
import { $, h, toast, showError, fmtDate, confirmDialog, withBusy } from './ui.js';

async function loadKeys() {
  try {
    const keys = await api.listKeys();
    const tbody = $('#keys-table tbody');
    tbody.replaceChildren(...keys.map((k) => h('tr', { 'data-testid': 'key-row', 'data-key-id': k.id },
      h('td', {}, h('strong', {}, k.name)),
      h('td', { class: 'id' }, `${k.prefix}…`),
      h('td', { class: 'hide-sm' }, fmtDate(k.created_at, true)),
      h('td', {}, k.last_used_at ? fmtDate(k.last_used_at, true) : h('span', { class: 'muted' }, 'never')),
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
  await withBusy($('#key-create'), async () => {
    try {
      const k = await api.createKey(name);
      $('#key-value').value = k.key;
      $('#key-created').hidden = false;
      $('#key-name').value = '';
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
