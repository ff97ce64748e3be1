// DOM and formatting helpers shared by every page of the dashboard.

import { ApiError } from './api.js';

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Builds an element: `on<event>` attributes become listeners, `text` the text content. */
export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

export function toast(message, kind = 'info') {
  const t = h('div', { class: `toast ${kind === 'error' ? 'error' : ''}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 7000 : 3500);
}

export function showError(box, err) {
  if (!box) return;
  if (!err) { box.hidden = true; box.textContent = ''; return; }
  box.textContent = err instanceof ApiError || err instanceof Error ? err.message : String(err);
  if (err instanceof ApiError) box.dataset.code = err.code; else delete box.dataset.code;
  box.hidden = false;
}

export function fmtDate(iso, withTime = false) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString('en-GB', withTime
    ? { day: 'numeric', month: 'short', year: 'numeric', hour: '2-digit', minute: '2-digit', timeZone: 'UTC' }
    : { day: 'numeric', month: 'long', year: 'numeric', timeZone: 'UTC' }) + (withTime ? ' UTC' : '');
}

export const todayUtc = () => new Date().toISOString().slice(0, 10);
export const fmtInt = (n) => (n == null ? '∞' : Number(n).toLocaleString('en-US'));

export function actionLabel(model, i) {
  const names = model && model.action_names;
  return names && names[i] != null ? names[i] : `action ${i}`;
}

export function confirmDialog({ title, text, ok = 'Delete' }) {
  const dlg = $('#confirm-dialog');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = ok;
  dlg.returnValue = '';
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.showModal();
  });
}

export async function withBusy(button, fn) {
  const was = button.disabled;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try { return await fn(); } finally { button.disabled = was; button.removeAttribute('aria-busy'); }
}
