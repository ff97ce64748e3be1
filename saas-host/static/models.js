// The Models page: the table of models, the create/edit form (the server's 422
// message is put next to the field it names), and deleting with confirmation.

import { api, ApiError } from './api.js';
import { closeEvents } from './live.js';
import { S } from './state.js';
import { $, $$, h, toast, showError, fmtInt, confirmDialog, withBusy } from './ui.js';

const ENGINE_FIELDS = ['learning_rate', 'discount_factor', 'epsilon', 'epsilon_decay', 'min_epsilon', 'initial_q', 'temperature'];
// Longest names first so "min_epsilon" is matched before "epsilon".
const FIELD_NAMES = ['epsilon_decay', 'min_epsilon', 'discount_factor', 'learning_rate', 'action_names', 'state_bins',
  'n_actions', 'initial_q', 'algorithm', 'exploration', 'temperature', 'epsilon', 'seed', 'name'];

export function renderModelsTable() {
  const tbody = $('#models-table tbody');
  tbody.replaceChildren(...S.models.map((m) => h('tr', { 'data-testid': 'model-row', 'data-model-id': m.id, 'data-model-name': m.name },
    h('td', {}, h('strong', {}, m.name), m.read_only ? h('span', { class: 'read-only-badge', title: m.read_only, 'data-testid': 'model-read-only' }, ' read-only: ', m.read_only) : ''),
    h('td', { class: 'id hide-sm' }, m.id),
    h('td', { class: 'num' }, String(m.n_actions)),
    h('td', { class: 'hide-sm' }, m.algorithm),
    h('td', { class: 'num' }, fmtInt(m.stats?.updates ?? 0)),
    h('td', { class: 'num' }, fmtInt(m.stats?.states ?? 0)),
    h('td', {}, h('div', { class: 'row-actions' },
      h('a', { class: 'btn btn-secondary btn-small', href: `#/operate/${encodeURIComponent(m.id)}`, 'data-action': 'operate' }, 'Operate'),
      h('a', { class: 'btn btn-secondary btn-small', href: `#/models/${encodeURIComponent(m.id)}/edit`, 'data-action': 'edit' }, 'Edit'),
      h('button', { type: 'button', class: 'btn btn-danger-ghost btn-small', 'data-action': 'delete', onclick: () => deleteModel(m) }, 'Delete'),
    )),
  )));
  if (S.models.length === 0) tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No models yet. Create one above.')));
  const max = S.dashboard?.limits?.max_models;
  $('#models-limit-text').textContent = max == null ? `${S.models.length} models.` : `${S.models.length} of ${max} models on your plan.`;
}

async function refreshModels() {
  try {
    S.models = await api.listModels();
    renderModelsTable();
  } catch (e) {
    toast(e.message, 'error');
  }
}

function addBinRow(bin = { low: 0, high: 1, bins: 10 }, disabled = false) {
  const idx = $$('.bin-row', $('#f-state_bins')).length;
  const mkField = (key, label, value, step) => {
    const id = `f-bin-${idx}-${key}`;
    return h('div', { class: 'field' },
      h('label', { for: id }, label),
      h('input', { id, type: 'number', step, value: String(value), 'data-bin': key, disabled, inputmode: 'decimal' }));
  };
  const row = h('div', { class: 'bin-row' },
    mkField('low', `Dim ${idx + 1} low`, bin.low, 'any'),
    mkField('high', 'high', bin.high, 'any'),
    mkField('bins', 'bins', bin.bins, '1'),
    h('button', { type: 'button', class: 'btn btn-ghost btn-small', disabled, 'aria-label': `Remove dimension ${idx + 1}`, onclick: () => { row.remove(); } }, 'Remove'));
  $('#f-state_bins').append(row);
}

function clearFieldErrors() {
  for (const e of $$('#model-form .field-error')) e.remove();
  for (const e of $$('#model-form [aria-invalid]')) e.removeAttribute('aria-invalid');
  showError($('#model-form-error'), null);
}

function fieldError(field, message) {
  const input = field === 'state_bins' ? $('#f-state_bins-group') : $(`#f-${field}`);
  if (!input) return null;
  const p = h('p', { class: 'field-error', id: `f-${field}-error`, 'data-testid': 'field-error', 'data-field': field }, message);
  if (field === 'state_bins') {
    $('#f-state_bins').after(p);
  } else {
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', `f-${field}-error`);
    input.closest('.field').append(p);
  }
  return input;
}

function openModelForm(model) {
  S.editing = model || null;
  const f = $('#model-form');
  f.reset();
  clearFieldErrors();
  $('#f-state_bins').replaceChildren();
  const editing = !!model;
  $('#model-form-title').textContent = editing ? `Edit “${model.name}”` : 'New model';
  $('#model-form-submit').textContent = editing ? 'Save changes' : 'Create model';
  $('#f-n_actions').disabled = editing;
  $('#f-add-bin').disabled = editing;
  if (editing) {
    $('#f-name').value = model.name;
    $('#f-n_actions').value = model.n_actions;
    $('#f-action_names').value = (model.action_names || []).join(', ');
    for (const k of ENGINE_FIELDS) $(`#f-${k}`).value = model[k] ?? '';
    $('#f-algorithm').value = model.algorithm;
    $('#f-exploration').value = model.exploration;
    $('#f-seed').value = model.seed ?? '';
    for (const b of model.state_bins || []) addBinRow(b, true);
  } else {
    const base = 'my-model';
    let name = base;
    for (let i = 2; S.models.some((m) => m.name === name); i++) name = `${base}-${i}`;
    $('#f-name').value = name;
  }
  $('#model-editor').hidden = false;
  $('#f-name').focus();
}

function readNumber(id) {
  const raw = $(`#f-${id}`).value.trim();
  if (raw === '') return undefined;
  const n = Number(raw);
  return Number.isFinite(n) ? n : raw; // let the server name the bad field
}

function collectModelForm() {
  const body = {};
  body.name = $('#f-name').value.trim();
  const nA = readNumber('n_actions');
  if (nA !== undefined) body.n_actions = nA;
  const names = $('#f-action_names').value.trim();
  body.action_names = names === '' ? null : names.split(',').map((s) => s.trim());
  for (const k of ENGINE_FIELDS) {
    const v = readNumber(k);
    if (v !== undefined) body[k] = v;
  }
  body.algorithm = $('#f-algorithm').value;
  body.exploration = $('#f-exploration').value;
  const seed = readNumber('seed');
  body.seed = seed === undefined ? null : seed;
  const bins = $$('.bin-row', $('#f-state_bins')).map((row) => {
    const get = (k) => { const raw = $(`[data-bin="${k}"]`, row).value.trim(); const n = Number(raw); return raw === '' ? null : Number.isFinite(n) ? n : raw; };
    return { low: get('low'), high: get('high'), bins: get('bins') };
  });
  body.state_bins = bins.length ? bins : null;
  return body;
}

function sameValue(a, b) { return JSON.stringify(a ?? null) === JSON.stringify(b ?? null); }

async function onModelSubmit(ev) {
  ev.preventDefault();
  clearFieldErrors();
  const body = collectModelForm();
  const editing = S.editing;
  await withBusy($('#model-form-submit'), async () => {
    try {
      let model;
      if (editing) {
        const patch = {};
        for (const [k, v] of Object.entries(body)) {
          if (k === 'n_actions' || k === 'state_bins') continue;
          if (!sameValue(v, editing[k])) patch[k] = v;
        }
        if (Object.keys(patch).length === 0) { toast('Nothing changed.'); location.hash = '#/models'; return; }
        model = await api.patchModel(editing.id, patch);
        S.models = S.models.map((m) => (m.id === model.id ? model : m));
        toast(`Saved “${model.name}”.`);
      } else {
        if (body.action_names === null) delete body.action_names;
        if (body.seed === null) delete body.seed;
        if (body.state_bins === null) delete body.state_bins;
        model = await api.createModel(body);
        S.models = [...S.models.filter((m) => m.id !== model.id), model];
        toast(`Created “${model.name}”.`);
      }
      $('#model-editor').hidden = true;
      S.editing = null;
      renderModelsTable();
      location.hash = editing ? '#/models' : `#/operate/${encodeURIComponent(model.id)}`;
    } catch (e) {
      showError($('#model-form-error'), e);
      if (e instanceof ApiError) {
        // The error's field is a JSON path (`state_bins[0].bins`): its first member is the input.
        const top = e.field ? e.field.split(/[.[]/)[0] : null;
        const field = FIELD_NAMES.includes(top) ? top : null;
        const input = field ? fieldError(field, e.message) : null;
        (input || $('#model-form-error')).focus?.();
      }
    }
  });
}

async function deleteModel(m) {
  const ok = await confirmDialog({
    title: `Delete “${m.name}”?`,
    text: 'Its Q-table and statistics are deleted for good. Clients that use its id will get 404.',
    ok: 'Delete model',
  });
  if (!ok) return;
  try {
    await api.deleteModel(m.id);
    S.models = S.models.filter((x) => x.id !== m.id);
    if (S.selectedId === m.id) { S.selectedId = null; closeEvents(); }
    renderModelsTable();
    toast(`Deleted “${m.name}”.`);
  } catch (e) {
    toast(e.message, 'error');
  }
}

/** `#/models`, `#/models/new`, `#/models/{id}/edit`. False when it sent the browser elsewhere. */
export async function showModels(id, sub) {
  renderModelsTable();
  if (id === 'new') openModelForm(null);
  else if (id && sub === 'edit') {
    let m = S.models.find((x) => x.id === id);
    if (!m) { try { m = await api.getModel(id); } catch (e) { toast(e.message, 'error'); location.hash = '#/models'; return false; } }
    openModelForm(m);
  } else { $('#model-editor').hidden = true; refreshModels(); }
  return true;
}

export function wireModels() {
  $('#model-form').addEventListener('submit', onModelSubmit);
  $('#f-add-bin').addEventListener('click', () => addBinRow());
}
