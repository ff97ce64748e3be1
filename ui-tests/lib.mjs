// Shared helpers of the browser test and the screenshot script.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const BASE = (process.env.QLEARN_BASE_URL || 'http://127.0.0.1:8000').replace(/\/$/, '');
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
    ],
  });
}

/** Polls `fn` (sync or async) until it returns a truthy value; throws with `what` on timeout. */
export async function until(what, fn, timeout = 15000, every = 100) {
  const end = Date.now() + timeout;
  let last;
  let lastErr;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) { lastErr = e; }
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}` + (lastErr ? ` (last error: ${lastErr.message})` : '') + (last !== undefined ? ` (last value: ${JSON.stringify(last)})` : ''));
}

/** Waits until the locator's text matches `re` and returns the text. */
export async function untilText(locator, re, timeout = 15000) {
  let text = null;
  await until(`text ${re} in ${locator}`, async () => {
    text = (await locator.textContent()) ?? '';
    return re.test(text);
  }, timeout).catch((e) => { throw new Error(`${e.message}; text was ${JSON.stringify(text)}`); });
  return text;
}

/** A JSON client of the server at `base` with `token`: `call(method, path, body)` → {status, headers, body}. */
export function clientOf(base, token) {
  return async (method, path, body) => {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = text; }
    return { status: res.status, headers: res.headers, body: json };
  };
}

/** A JSON call to the API from Node, as a second client would make it. */
export function http(method, path, body, token) {
  return clientOf(BASE, token)(method, path, body);
}

/**
 * Scrolls the card `selector` just below the sticky header and returns its
 * box with an 8 px margin, the clip of a screenshot of that card alone.
 */
export function cardClip(page, selector) {
  return page.evaluate((sel) => {
    const card = document.querySelector(sel);
    const header = document.querySelector('.topbar').getBoundingClientRect().height;
    window.scrollTo(0, card.getBoundingClientRect().top + window.scrollY - header - 16);
    const r = card.getBoundingClientRect();
    return { x: r.left - 8, y: r.top - 8, width: r.width + 16, height: r.height + 16 };
  }, selector);
}

export function uniqueEmail(tag = 'ui') {
  return `${tag}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}@example.com`;
}

/** A free TCP port on 127.0.0.1. */
async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)); });
  });
}

/**
 * Starts another saas-host (QLEARN_HOST_BIN, set by with-server.sh) on a free
 * port with a fresh SQLite database and `args` (e.g. white-label flags); waits
 * for /healthz. Returns `{ base, dir, stop }`; `stop()` ends that process (by
 * its own handle) and removes its directory.
 */
export async function startServer(args = [], setup = () => {}) {
  const bin = process.env.QLEARN_HOST_BIN;
  if (!bin) throw new Error('QLEARN_HOST_BIN is not set (run through ui-tests/with-server.sh)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qlearn-ui2-'));
  const extra = setup(dir) || [];
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const log = fs.openSync(path.join(dir, 'server.log'), 'w');
  const child = spawn(bin, ['serve', '--host', '127.0.0.1', '--port', String(port),
    '--database-url', `sqlite://${path.join(dir, 'ui2.db')}`, ...args, ...extra], {
    env: { ...process.env, SECRET_KEY: 'ui-test-secret-0123456789abcdefghijklmnop' },
    stdio: ['ignore', log, log],
  });
  let exited = null;
  child.on('exit', (code) => { exited = code; });
  const stop = async () => {
    if (exited === null) {
      const done = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([done, new Promise((r) => setTimeout(r, 10000))]);
      if (exited === null) child.kill('SIGKILL');
    }
    fs.closeSync(log);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await until(`${base}/healthz`, async () => {
      if (exited !== null) throw new Error(`saas-host exited (${exited}): ${fs.readFileSync(path.join(dir, 'server.log'), 'utf8')}`);
      return (await fetch(base + '/healthz')).ok;
    }, 30000, 200);
  } catch (e) {
    await stop();
    throw e;
  }
  return { base, dir, stop };
}

/** The white-label configuration the browser test and the screenshot use. */
export const BRAND = {
  name: 'Acme & Co. Learning',
  primary: '#0f766e',
  primaryRgb: 'rgb(15, 118, 110)',
  accent: '#f59e0b',
  support: 'help@acme.example',
  docsTitle: 'Acme API reference',
  logo: '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="14" fill="#f59e0b"/><path d="M9 22l7-13 7 13z" fill="#0f766e"/></svg>',
};

/** Starts a server with the {@link BRAND} white-label configuration. */
export function startBrandedServer() {
  return startServer([
    '--brand-name', BRAND.name, '--brand-primary-color', BRAND.primary,
    '--brand-accent-color', BRAND.accent, '--brand-support', BRAND.support,
    '--brand-docs-title', BRAND.docsTitle,
  ], (dir) => {
    const logo = path.join(dir, 'logo.svg');
    fs.writeFileSync(logo, BRAND.logo);
    return ['--brand-logo', logo];
  });
}
