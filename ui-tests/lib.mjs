// Shared helpers of the browser test and the screenshot script.
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

/** A JSON call to the API from Node, as a second client would make it. */
export async function http(method, path, body, token) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = text; }
  return { status: res.status, headers: res.headers, body: json };
}

export function uniqueEmail(tag = 'ui') {
  return `${tag}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}@example.com`;
}
