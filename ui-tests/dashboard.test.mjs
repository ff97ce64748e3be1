// End-to-end test of the qlearn web dashboard in real headless Chromium.
// Run by scripts/ui-test.sh against a freshly started saas-host
// (QLEARN_BASE_URL points at it); `node --test` is the runner.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BASE, BRAND, launch, startBrandedServer, until, untilText, http, uniqueEmail } from './lib.mjs';

const PASSWORD = 'correct horse battery staple';
const HTTP_ERROR = /Failed to load resource: the server responded with a status of (\d{3})/;

let browser;
let context;
let page;
const consoleErrors = []; // errors nobody expected
const expectedHttpErrors = []; // 4xx the test provoked on purpose
let expectStatus = null; // set of statuses the current step provokes on purpose
const eventStreamUrls = []; // every event-stream URL the page opened

before(async () => {
  browser = await launch();
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const m = text.match(HTTP_ERROR);
    if (m && expectStatus && expectStatus.has(Number(m[1]))) { expectedHttpErrors.push(text); return; }
    consoleErrors.push(`${text} @ ${msg.location()?.url || ''}`);
  });
  page.on('pageerror', (err) => consoleErrors.push(`uncaught: ${err.message}`));
  page.on('request', (req) => {
    if (/\/models\/[^/]+\/events(\?|$)/.test(req.url())) eventStreamUrls.push(req.url());
  });
  page.on('requestfailed', (req) => {
    // An EventSource closed by the page itself is reported as aborted; that is not a failure.
    const f = req.failure()?.errorText || '';
    if (!/ERR_ABORTED/.test(f)) consoleErrors.push(`request failed: ${req.method()} ${req.url()} ${f}`);
  });
});

after(async () => {
  await browser?.close();
});

// Runs a step that provokes the given HTTP error statuses on purpose: the browser's
// console errors for them are expected, and each status must really occur.
async function provoking(statuses, fn) {
  expectStatus = new Set(statuses);
  const from = expectedHttpErrors.length;
  try { await fn(); } finally {
    // let late console messages of this step arrive before the window closes
    await page.waitForTimeout(150);
    expectStatus = null;
  }
  const seen = expectedHttpErrors.slice(from).map((text) => Number(text.match(HTTP_ERROR)[1]));
  for (const s of statuses) assert.ok(seen.includes(s), `the step provoked a ${s} (saw ${JSON.stringify(seen)})`);
}

const cell = (state, action) => page.locator(`[data-testid="q-cell"][data-state="${state}"][data-action="${action}"]`);
const cellValue = async (state, action) => {
  const c = cell(state, action);
  if ((await c.count()) === 0) return null;
  return Number(await c.getAttribute('data-value'));
};

test('the web dashboard, end to end in headless Chromium', async (t) => {
  const email = uniqueEmail('e2e');
  let modelId;
  let defaultModelName;

  await t.test('GET / serves the page with its assets and no console errors', async () => {
    const res = await page.goto(BASE + '/', { waitUntil: 'load' });
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-type'] || '', /text\/html/);
    await page.locator('#auth-view').waitFor({ state: 'visible' });
    assert.equal(await page.title(), 'qlearn — self-learning models as a service');
    // the module script really ran: the tabs are wired
    await page.click('#tab-register');
    assert.equal(await page.locator('#auth-submit').textContent(), 'Create account');
  });

  await t.test('registration shows the API error message, then succeeds', async () => {
    await provoking([422], async () => {
      await page.fill('#auth-email', email);
      await page.fill('#auth-password', 'short');
      await page.click('#auth-submit');
      const msg = await untilText(page.locator('#auth-error'), /\S/);
      assert.match(msg, /password/i, 'the server message names the password');
    });
    await page.fill('#auth-password', PASSWORD);
    await page.click('#auth-submit');
    await page.locator('#view-dashboard').waitFor({ state: 'visible' });
    await untilText(page.locator('#user-email'), new RegExp(email.replace(/[.+]/g, '\\$&')));
    assert.equal((await page.locator('#tier-badge').textContent()).trim(), 'free');
    await untilText(page.locator('#usage-remaining'), /^100$/);
    assert.ok(await page.evaluate(() => !!sessionStorage.getItem('qlearn.token')), 'the JWT is kept in sessionStorage');
    const bars = page.locator('#usage-chart [data-testid="usage-bar"]');
    const days = await bars.count();
    assert.ok(days >= 28 && days <= 31, `one bar per day of the month, got ${days}`);
    // a new account comes with a default model
    await until('the default model in the dashboard table', async () => (await page.locator('[data-testid="dash-model-row"]').count()) === 1);
  });

  await t.test('create a model: the 422 message appears next to the form, then it is created', async () => {
    await page.click('#nav-models');
    await page.locator('#view-models').waitFor({ state: 'visible' });
    await until('the models table', async () => (await page.locator('[data-testid="model-row"]').count()) === 1);
    defaultModelName = await page.locator('[data-testid="model-row"]').first().getAttribute('data-model-name');
    await page.click('#new-model-btn');
    await page.locator('#model-editor').waitFor({ state: 'visible' });
    // every engine parameter has a field with a label
    for (const f of ['name', 'n_actions', 'action_names', 'learning_rate', 'discount_factor', 'epsilon', 'epsilon_decay',
      'min_epsilon', 'initial_q', 'algorithm', 'exploration', 'temperature', 'seed']) {
      assert.equal(await page.locator(`label[for="f-${f}"]`).count(), 1, `label for ${f}`);
    }
    assert.equal(await page.locator('#f-learning_rate').inputValue(), '0.1');
    assert.equal(await page.locator('#f-discount_factor').inputValue(), '0.95');
    await page.fill('#f-name', 'e2e-grid');
    await page.fill('#f-n_actions', '4');
    await page.fill('#f-action_names', 'up, down, left, right');
    await page.fill('#f-learning_rate', '2');
    await provoking([422], async () => {
      await page.click('#model-form-submit');
      const msg = await untilText(page.locator('#model-form-error'), /\S/);
      assert.match(msg, /learning_rate/, 'the API names the bad field');
      await untilText(page.locator('[data-testid="field-error"][data-field="learning_rate"]'), /learning_rate/);
      assert.equal(await page.locator('#f-learning_rate').getAttribute('aria-invalid'), 'true');
    });
    await page.fill('#f-learning_rate', '0.5');
    await page.click('#model-form-submit');
    await page.locator('#view-operate').waitFor({ state: 'visible' });
    modelId = decodeURIComponent(new URL(page.url()).hash.split('/')[2] || '');
    assert.ok(modelId, 'navigated to the new model');
    assert.equal(await page.locator('#model-select').inputValue(), modelId);
    await untilText(page.locator('#live-status'), /live/);
    // The stream is opened with a single-use ticket, never the session token in the URL.
    assert.ok(eventStreamUrls.length > 0, 'the page opened an event stream');
    for (const u of eventStreamUrls) {
      const q = new URL(u).searchParams;
      assert.ok(q.get('ticket') && !q.has('access_token'), `stream URL carries a ticket only: ${u}`);
    }
    const token = await page.evaluate(() => sessionStorage.getItem('qlearn.token'));
    assert.ok(token, 'signed in');
    assert.ok(eventStreamUrls.every((u) => !u.includes(token)), 'no token in a stream URL');
  });

  await t.test('predict shows the action, its name, the Q-values and whether it explored', async () => {
    await page.fill('#state-input', '[0, 0]');
    await page.uncheck('#explore-input');
    await page.click('#predict-btn');
    await page.locator('#predict-result').waitFor({ state: 'visible' });
    const action = Number(await page.locator('#pred-action').textContent());
    assert.ok(action >= 0 && action < 4);
    const name = await page.locator('#pred-action-name').textContent();
    assert.ok(['up', 'down', 'left', 'right'].some((n) => name.includes(n)), `action name shown: ${name}`);
    assert.equal(await page.locator('[data-testid="q-bar"]').count(), 4);
    assert.equal(await page.locator('#pred-explored').getAttribute('data-explored'), 'false');
    assert.ok(await page.locator('#pred-decision-box').isHidden(), 'a model without decisions logs none');
    // the feedback form is pre-filled with the decision
    assert.equal(await page.locator('#fb-state').inputValue(), '[0, 0]');
    assert.equal(await page.locator('#fb-action').inputValue(), String(action));
  });

  await t.test('feedback changes the heatmap cell', async () => {
    assert.equal(await cellValue('[0,0]', 3), null, 'no row for [0, 0] before any update');
    await page.selectOption('#fb-action', '3');
    await page.fill('#fb-reward', '1');
    await page.fill('#fb-next-state', '[0, 1]');
    await page.check('#fb-done');
    await page.click('#feedback-btn');
    await untilText(page.locator('#fb-q-value'), /^0\.5$/);
    await until('heatmap cell [0,0]×3 = 0.5', async () => (await cellValue('[0,0]', 3)) === 0.5);
    assert.equal(await cellValue('[0,0]', 0), 0);
    assert.match(await cell('[0,0]', 3).textContent(), /0\.5/);
    await untilText(page.locator('#stat-updates'), /^1$/);
    // done ended an episode: the learning curve has a point
    await until('one point on the learning curve', async () => (await page.locator('#learning-curve [data-testid="curve-point"]').count()) === 1);
  });

  await t.test("a second client's update appears live, without a reload", async () => {
    await page.evaluate(() => { window.__noReload = 'still here'; });
    const login = await http('POST', '/login', { email, password: PASSWORD });
    assert.equal(login.status, 200);
    const token = login.body.access_token;
    assert.ok(token);
    const r = await http('POST', '/update', {
      model_id: modelId, state: [2, 3], action: 1, reward: -1, next_state: [3, 3], done: true,
    }, token);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await until('heatmap cell [2,3]×1 = -0.5 from the other client', async () => (await cellValue('[2,3]', 1)) === -0.5);
    // and an update of a state already shown changes its cell in place
    const r2 = await http('POST', '/update', {
      model_id: modelId, state: [0, 0], action: 3, reward: 1, next_state: [0, 1], done: false,
    }, token);
    assert.equal(r2.status, 200, JSON.stringify(r2.body));
    const expected = r2.body.q_value;
    await until(`heatmap cell [0,0]×3 = ${expected}`, async () => Math.abs((await cellValue('[0,0]', 3)) - expected) < 1e-9);
    await untilText(page.locator('#stat-updates'), /^3$/);
    await until('two points on the learning curve', async () => (await page.locator('#learning-curve [data-testid="curve-point"]').count()) === 2);
    assert.equal(await page.evaluate(() => window.__noReload), 'still here', 'the page was not reloaded');
  });

  await t.test('the usage chart and remaining count reflect the calls', async () => {
    // 1 predict + 1 update from the page, 2 updates from the second client
    await untilText(page.locator('#usage-pill-text'), /^4 \/ 100$/);
    await page.click('#nav-dashboard');
    await page.locator('#view-dashboard').waitFor({ state: 'visible' });
    await untilText(page.locator('#usage-calls'), /^4$/);
    await untilText(page.locator('#usage-remaining'), /^96$/);
    const today = new Date().toISOString().slice(0, 10);
    await until("today's bar counts 4 calls", async () =>
      (await page.locator(`#usage-chart [data-testid="usage-bar"][data-date="${today}"]`).getAttribute('data-calls')) === '4');
  });

  await t.test('the gridworld demo trains the model in batches and says what it costs', async () => {
    await page.click('#nav-operate');
    await page.locator('#view-operate').waitFor({ state: 'visible' });
    await untilText(page.locator('#live-status'), /live/);
    await page.fill('#demo-budget', '12');
    await untilText(page.locator('#demo-info'), /12 metered calls.*96/);
    await page.click('#demo-run');
    await untilText(page.locator('#demo-status'), /^Done\. 12 calls used/, 30000);
    await untilText(page.locator('#stat-updates'), /^15$/);
    await untilText(page.locator('#usage-pill-text'), /^16 \/ 100$/);
  });

  await t.test('API keys: create, shown once, usable, revoke', async () => {
    await page.click('#nav-keys');
    await page.locator('#view-keys').waitFor({ state: 'visible' });
    await page.fill('#key-name', 'ci worker');
    await page.click('#key-create');
    await page.locator('#key-created').waitFor({ state: 'visible' });
    const key = await page.locator('#key-value').inputValue();
    assert.ok(key.length >= 16, 'the key is shown');
    await until('one key row', async () => (await page.locator('[data-testid="key-row"]').count()) === 1);
    const me = await http('GET', '/me', undefined, key);
    assert.equal(me.status, 200);
    assert.equal(me.body.email, email);
    await page.click('#key-dismiss');
    assert.equal(await page.locator('#key-value').inputValue(), '', 'the key is gone from the page once dismissed');
    await page.click('[data-testid="key-row"] [data-action="revoke"]');
    await page.locator('#confirm-dialog').waitFor({ state: 'visible' });
    await page.click('#confirm-ok');
    await until('no key rows', async () => (await page.locator('[data-testid="key-row"]').count()) === 0);
    assert.equal((await http('GET', '/me', undefined, key)).status, 401);
  });

  await t.test('API keys: scope and expiry, chosen and listed', async () => {
    await page.locator('#view-keys').waitFor({ state: 'visible' });
    // A user (not an admin) is not offered the admin scope.
    const adminOption = page.locator('#key-scope option[value="admin"]');
    await until('the admin scope withheld', async () => await adminOption.isDisabled());
    assert.equal(await page.locator('#key-scope').inputValue(), 'full', 'full by default');
    await page.fill('#key-name', 'reader');
    await page.selectOption('#key-scope', 'read');
    await page.fill('#key-expiry', '30');
    const before = Date.now();
    await page.click('#key-create');
    await page.locator('#key-created').waitFor({ state: 'visible' });
    const key = await page.locator('#key-value').inputValue();
    const row = page.locator('[data-testid="key-row"]');
    await until('the reader row', async () => (await row.count()) === 1);
    assert.equal(await row.locator('[data-testid="key-scope"]').textContent(), 'read');
    const expires = Date.parse(await row.locator('[data-testid="key-expires"]').getAttribute('data-expires-at'));
    const days = (expires - before) / 86400e3;
    assert.ok(days > 29.9 && days < 30.1, `expires in 30 days (${days})`);
    assert.match(await row.locator('[data-testid="key-expires"]').textContent(), /20\d\d/);
    // The server holds the key to what the page said.
    const listed = await http('GET', '/api-keys', undefined, key);
    assert.equal(listed.status, 200, 'a read key reads');
    assert.equal(listed.body[0].scope, 'read');
    assert.equal(listed.body[0].expires_at, await row.locator('[data-testid="key-expires"]').getAttribute('data-expires-at'));
    const write = await http('POST', '/models', { name: 'nope', n_actions: 2 }, key);
    assert.equal(write.status, 403, 'a read key cannot create models');
    assert.equal(write.body.error.code, 'insufficient_scope');
    // Without an expiry: "never"; a bad expiry is refused on the page.
    await page.click('#key-dismiss');
    await page.fill('#key-name', 'engine forever');
    await page.selectOption('#key-scope', 'engine');
    await page.click('#key-create');
    await until('two key rows', async () => (await row.count()) === 2);
    const forever = page.locator('[data-testid="key-row"]', { hasText: 'engine forever' });
    assert.equal(await forever.locator('[data-testid="key-scope"]').textContent(), 'engine');
    assert.equal(await forever.locator('[data-testid="key-expires"]').textContent(), 'never');
    await page.click('#key-dismiss');
    await page.fill('#key-name', 'bad expiry');
    await page.fill('#key-expiry', '0');
    await provoking([422], async () => {
      await page.click('#key-create');
      await untilText(page.locator('#key-error'), /expires_in_days|1 to 3650/);
    });
    assert.equal(await row.count(), 2, 'nothing created');
    await page.fill('#key-expiry', '');
    await page.fill('#key-name', '');
    // Clean up for the next tests.
    for (let n = 2; n > 0; n--) {
      await page.click('[data-testid="key-row"] [data-action="revoke"]');
      await page.click('#confirm-ok');
      await until(`${n - 1} key rows`, async () => (await row.count()) === n - 1);
    }
  });

  await t.test('edit and delete a model, with confirmation', async () => {
    await page.click('#nav-models');
    await until('two model rows', async () => (await page.locator('[data-testid="model-row"]').count()) === 2);
    await page.click(`[data-testid="model-row"][data-model-id="${modelId}"] [data-action="edit"]`);
    await page.locator('#model-editor').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#f-name').inputValue(), 'e2e-grid');
    assert.ok(await page.locator('#f-n_actions').isDisabled(), 'n_actions cannot change');
    await page.fill('#f-name', 'e2e-grid-renamed');
    await page.fill('#f-epsilon', '0.2');
    await page.click('#model-form-submit');
    await until('the renamed row', async () =>
      (await page.locator(`[data-testid="model-row"][data-model-id="${modelId}"]`).getAttribute('data-model-name')) === 'e2e-grid-renamed');
    const got = await http('GET', `/models/${modelId}`, undefined, await page.evaluate(() => sessionStorage.getItem('qlearn.token')));
    assert.equal(got.body.name, 'e2e-grid-renamed');
    assert.equal(got.body.epsilon, 0.2);

    const other = page.locator(`[data-testid="model-row"][data-model-name="${defaultModelName}"]`);
    // cancel first: nothing is deleted
    await other.locator('[data-action="delete"]').click();
    await page.locator('#confirm-dialog').waitFor({ state: 'visible' });
    await page.keyboard.press('Escape');
    await page.locator('#confirm-dialog').waitFor({ state: 'hidden' });
    assert.equal(await page.locator('[data-testid="model-row"]').count(), 2);
    await other.locator('[data-action="delete"]').click();
    await page.click('#confirm-ok');
    await until('one model row left', async () => (await page.locator('[data-testid="model-row"]').count()) === 1);
  });

  await t.test('the page fits a 375 px phone screen', async () => {
    await page.setViewportSize({ width: 375, height: 812 });
    for (const hash of ['#/dashboard', `#/operate/${modelId}`, '#/models', '#/keys']) {
      await page.evaluate((h) => { location.hash = h; }, hash);
      await page.waitForTimeout(400);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 0, `${hash}: no horizontal scroll at 375 px (overflow ${overflow}px)`);
    }
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  await t.test('the forms are keyboard-usable', async () => {
    await page.evaluate(() => { location.hash = '#/keys'; });
    await page.locator('#view-keys').waitFor({ state: 'visible' });
    await page.focus('#key-name');
    await page.keyboard.type('keyboard key');
    await page.keyboard.press('Enter');
    await until('a key made from the keyboard', async () => (await page.locator('[data-testid="key-row"]').count()) === 1);
    const unlabeled = await page.evaluate(() => Array.from(document.querySelectorAll('input:not([type=hidden]), select'))
      .filter((e) => e.offsetParent !== null || e.closest('form'))
      .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
      .map((e) => e.id || e.name));
    assert.deepEqual(unlabeled, [], 'every input has a label');
  });

  await t.test('log out forgets the token', async () => {
    await page.click('#logout-btn');
    await page.locator('#auth-view').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('qlearn.token')), null);
    // a wrong password shows the API's message
    await provoking([401], async () => {
      await page.fill('#auth-email', email);
      await page.fill('#auth-password', 'not the password');
      await page.click('#auth-submit');
      await untilText(page.locator('#auth-error'), /\S/);
      assert.equal(await page.locator('#auth-error').getAttribute('data-code'), 'invalid_credentials');
    });
    // and signing in again works, from the keyboard alone
    await page.fill('#auth-email', '');
    await page.fill('#auth-password', '');
    await page.focus('#auth-email');
    await page.keyboard.type(email);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'auth-password');
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Enter');
    await page.locator('#view-dashboard').waitFor({ state: 'visible' });
    await untilText(page.locator('#usage-calls'), /^16$/);
  });

  await t.test('a clear notice near and at the monthly limit; refused calls show the API message', async () => {
    const token = await page.evaluate(() => sessionStorage.getItem('qlearn.token'));
    // string and integer states too, so the table needs several pages
    const exp = (n) => Array.from({ length: n }, (_, i) => {
      const state = i % 2 ? `room-${i % 24}` : i % 10;
      return { state, action: i % 4, reward: 0.25, next_state: state, done: false };
    });
    const used = Number(await page.locator('#usage-calls').textContent());
    const toNear = 85 - used;
    assert.ok(toNear > 0, `calls so far ${used}`);
    let r = await http('POST', '/update/batch', { model_id: modelId, experiences: exp(toNear) }, token);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.results.length, toNear);
    await page.click('#dash-refresh');
    await untilText(page.locator('#usage-calls'), /^85$/);
    await page.locator('#quota-notice').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#quota-notice').getAttribute('data-level'), 'near');
    assert.match(await page.locator('#quota-notice').textContent(), /85 of 100/);
    // the demo asked for more calls than are left: it says so, runs, and stops cleanly on the 429
    await page.click('#nav-operate');
    await page.locator('#view-operate').waitFor({ state: 'visible' });
    await page.selectOption('#model-select', modelId);
    await untilText(page.locator('#live-status'), /live/);
    await page.fill('#demo-budget', '40');
    await untilText(page.locator('#demo-info'), /40 metered calls.*15 you have left.*more than you have/);
    await provoking([429], async () => {
      await page.click('#demo-run');
      const text = await untilText(page.locator('#demo-status'), /^Stopped: /, 30000);
      assert.match(text, /quota|limit/i, `the API's message is shown: ${text}`);
      assert.match(await page.locator('#demo-status').getAttribute('class'), /error/);
    });
    assert.ok(!(await page.locator('#demo-stop').isEnabled()), 'the demo has ended');
    const dash = await http('GET', '/dashboard', undefined, token);
    const left = dash.body.usage.remaining;
    assert.ok(left >= 0 && left < 10, `a refused chunk is smaller than 10 calls: ${left} left`);
    if (left > 0) {
      r = await http('POST', '/update/batch', { model_id: modelId, experiences: exp(left) }, token);
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }
    r = await http('POST', '/update', { model_id: modelId, ...exp(1)[0] }, token);
    assert.equal(r.status, 429);
    assert.equal(r.body.error.code, 'quota_exceeded');
    assert.ok(Number(r.headers.get('retry-after')) > 0, 'Retry-After on the 429');
    await page.click('#nav-dashboard');
    await page.click('#dash-refresh');
    await untilText(page.locator('#usage-remaining'), /^0$/);
    await until('the at-limit notice', async () => (await page.locator('#quota-notice').getAttribute('data-level')) === 'limit');
    assert.match(await page.locator('#quota-notice').textContent(), /all 100 calls/);
    await page.click('#nav-operate');
    await page.locator('#view-operate').waitFor({ state: 'visible' });
    await page.selectOption('#model-select', modelId);
    await untilText(page.locator('#live-status'), /live/);
    assert.ok(await page.locator('#demo-run').isDisabled(), 'the demo cannot start without calls left');
    // paging through the Q-table
    await page.selectOption('#qt-limit', '10');
    const first = await untilText(page.locator('#qt-range'), /^1–10 of \d+ states$/);
    const total = Number(first.match(/of (\d+)/)[1]);
    assert.ok(total > 10, `states: ${total}`);
    assert.equal(await page.locator('[data-testid="q-row"]').count(), 10);
    assert.ok(await page.locator('#qt-prev').isDisabled());
    await page.click('#qt-next');
    await untilText(page.locator('#qt-range'), new RegExp(`^11–${Math.min(20, total)} of ${total} states$`));
    await page.click('#qt-prev');
    await untilText(page.locator('#qt-range'), /^1–10 /);
    const seen = new Set();
    for (let p = 0; p * 10 < total; p++) {
      if (p > 0) { await page.waitForTimeout(300); await page.click('#qt-next'); } // a person's pace
      await until(`page ${p + 1}`, async () => (await page.locator('#qt-range').textContent()).startsWith(`${p * 10 + 1}–`));
      for (const k of await page.locator('[data-testid="q-row"]').evaluateAll((rows) => rows.map((r) => r.dataset.state))) seen.add(k);
    }
    assert.equal(seen.size, total, 'every state on exactly one page');
    assert.ok(seen.has('"room-3"') && seen.has('4') && seen.has('[0,0]'), 'strings, integers and arrays are shown as sent');
    assert.ok(await page.locator('#qt-next').isDisabled());
    await provoking([429], async () => {
      await page.fill('#state-input', 'lobby');
      await page.click('#predict-btn');
      await untilText(page.locator('#operate-error'), /\S/);
      assert.equal(await page.locator('#operate-error').getAttribute('data-code'), 'quota_exceeded');
    });
    // the refused call was not counted
    await page.click('#nav-dashboard');
    await page.click('#dash-refresh');
    await page.waitForTimeout(300);
    await untilText(page.locator('#usage-calls'), /^100$/);
  });

  await t.test('decisions view: counts, reward rate, chart and recent decisions, kept live', async () => {
    const dEmail = uniqueEmail('decisions');
    const reg = await http('POST', '/register', { email: dEmail, password: PASSWORD });
    assert.equal(reg.status, 201);
    const token = reg.body.access_token;
    const mid = reg.body.default_model_id;
    // A second client's calls, paced under the free tier's 5 requests per second.
    const call = async (method, path, body) => { await page.waitForTimeout(250); return http(method, path, body, token); };
    let r = await call('PATCH', `/models/${mid}`, { decisions: { reward_wait_seconds: 4, default_reward: 0 } });
    assert.equal(r.status, 200);
    r = await call('POST', '/models', { name: 'no-decisions', n_actions: 2 });
    assert.equal(r.status, 201);
    const plainId = r.body.id;
    for (let i = 0; i < 4; i++) {
      r = await call('POST', '/predict', { model_id: mid, state: i, decision_id: `d${i}` });
      assert.equal(r.status, 200);
    }
    r = await call('POST', '/rewards/batch', { model_id: mid, rewards: [
      { decision_id: 'd0', value: 1, final: true }, { decision_id: 'd1', value: 0.5 }] });
    assert.deepEqual(r.body.results.map((x) => x.status), ['applied', 'open']);

    await page.click('#logout-btn');
    await page.locator('#auth-view').waitFor({ state: 'visible' });
    await page.fill('#auth-email', dEmail);
    await page.fill('#auth-password', PASSWORD);
    await page.click('#auth-submit');
    await page.locator('#view-dashboard').waitFor({ state: 'visible' });
    // A model that logs no decisions has no decisions view.
    await page.evaluate((id) => { location.hash = `#/operate/${id}`; }, plainId);
    await untilText(page.locator('#live-status'), /live/);
    assert.ok(await page.locator('#decisions-card').isHidden());
    // Every read of the log asks for its latest page, newest first and
    // uncounted: no count and no offset over the whole log.
    const listings = [];
    const onRequest = (req) => { if (req.url().includes('/decisions?')) listings.push(new URL(req.url()).search); };
    page.on('request', onRequest);
    await page.selectOption('#model-select', mid);
    await page.locator('#decisions-card').waitFor({ state: 'visible' });
    assert.match(await page.locator('#decisions-setting').textContent(), /rewards wait 4 s · aggregation sum · default reward 0/);
    await untilText(page.locator('#dstat-decisions'), /^4$/);
    // The latest page, read newest first and shown in time order.
    await untilText(page.locator('#decisions-status'), /^all 4 decisions in the log, updated /);
    page.off('request', onRequest);
    assert.ok(listings.length > 0, 'the view read the log');
    for (const search of listings) assert.equal(search, '?order=newest&count=false&limit=1000');
    assert.equal(await page.locator('#dstat-rewards').textContent(), '2');
    assert.equal(await page.locator('#dstat-pending').textContent(), '3');
    const statusOf = (id) => page.locator(`[data-testid="decision-row"][data-decision-id="${id}"]`).getAttribute('data-status');
    assert.equal(await statusOf('d0'), 'applied');
    assert.equal(await statusOf('d1'), 'open');
    assert.deepEqual(await page.locator('[data-testid="decision-row"]').evaluateAll((rows) => rows.map((x) => x.dataset.decisionId)),
      ['d3', 'd2', 'd1', 'd0'], 'newest first');
    const bucketSum = (attr) => page.locator('[data-testid="decision-bucket"]').evaluateAll(
      (gs, a) => gs.reduce((s, g) => s + Number(g.getAttribute(a)), 0), attr);
    assert.equal(await bucketSum('data-decisions'), 4);
    assert.equal(await bucketSum('data-rewards'), 2);
    // Only d0 has closed: the reward rate is its reward.
    assert.equal(await page.locator('#dstat-rate').getAttribute('data-value'), '1');
    // The windows close after 4 s and the server settles them: the page follows
    // without a reload (d1 learns its 0.5; d2 and d3 the default reward 0).
    await until('the deadlines settled on screen', async () => (await page.locator('#dstat-pending').textContent()) === '0', 20000);
    assert.equal(await page.locator('#dstat-defaulted').textContent(), '2');
    assert.equal(Number(await page.locator('#dstat-rate').getAttribute('data-value')), (1 + 0.5 + 0 + 0) / 4);
    assert.equal(await page.locator('#dstat-rate').textContent(), '0.375');
    await until('every row applied', async () => (await page.locator('[data-testid="decision-row"][data-status="applied"]').count()) === 4);
    // A reward after the window is counted as late, not as a reward.
    r = await call('POST', '/rewards', { model_id: mid, decision_id: 'd2', value: 3 });
    assert.equal(r.body.status, 'late');
    await untilText(page.locator('#dstat-late'), /^1$/);
    assert.equal(await page.locator('#dstat-rewards').textContent(), '2');
    // A predict from this page logs a decision, shown at the top at once.
    await page.fill('#state-input', 'lobby');
    await page.click('#predict-btn');
    await page.locator('#predict-result').waitFor({ state: 'visible' });
    const logged = await untilText(page.locator('#pred-decision'), /^d\w+ · p = [\d.]+$/);
    await untilText(page.locator('#dstat-decisions'), /^5$/);
    const top = page.locator('[data-testid="decision-row"]').first();
    assert.equal(await top.getAttribute('data-status'), 'open');
    assert.match(await top.textContent(), /lobby/);
    assert.equal(await top.getAttribute('data-decision-id'), logged.split(' ')[0]);
  });

  await t.test('plans page: every plan, the current one marked, Upgrade opens the checkout (issue 17)', async () => {
    await page.click('#nav-plans');
    await page.locator('#view-plans').waitFor({ state: 'visible' });
    await until('three plans', async () => (await page.locator('[data-testid="plan-card"]').count()) === 3);
    const tiers = await page.locator('[data-testid="plan-card"]').evaluateAll((cs) => cs.map((c) => c.dataset.tier));
    assert.deepEqual(tiers, ['free', 'pro', 'enterprise']);
    assert.equal(await page.locator('[data-tier="free"] [data-testid="plan-current"]').count(), 1, 'free is marked');
    assert.equal(await page.locator('[data-testid="plan-current"]').count(), 1);
    assert.equal(await page.locator('[data-tier="free"] [data-testid="plan-upgrade"]').count(), 0);
    assert.equal(await page.locator('[data-tier="pro"] [data-testid="plan-price"]').textContent(), '29.00 USD / month');
    assert.equal(await page.locator('[data-tier="free"] [data-feature="advanced_algorithms"]').getAttribute('class'), 'no');
    assert.equal(await page.locator('[data-tier="pro"] [data-feature="decisions"]').getAttribute('class'), 'yes');
    const href = await page.locator('[data-tier="pro"] [data-testid="plan-upgrade"]').getAttribute('href');
    assert.match(href, /^https:\/\/buy\.example\/checkout\?client_reference_id=[A-Za-z0-9_%-]+&plan=pro$/);
    assert.equal(await page.locator('#plans-no-checkout').isHidden(), true);
  });

  await t.test('no console errors during the run', async () => {
    await page.waitForTimeout(300);
    assert.deepEqual(consoleErrors, []);
  });
});

test('a white-labelled dashboard and API viewer (issue 17)', async () => {
  const branded = await startBrandedServer();
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  try {
    const p = await ctx.newPage();
    p.on('console', (m) => { if (m.type() === 'error') errors.push(`${m.text()} @ ${m.location()?.url || ''} on ${p.url()}`); });
    p.on('pageerror', (e) => errors.push(e.message));
    const res = await p.goto(branded.base + '/', { waitUntil: 'load' });
    assert.equal(res.status(), 200);
    await p.locator('#auth-view').waitFor({ state: 'visible' });
    // The name (HTML-escaped by the server, shown as configured) everywhere.
    assert.equal(await p.title(), `${BRAND.name} — self-learning models as a service`);
    assert.equal(await p.locator('[data-testid="brand-name"]').textContent(), BRAND.name);
    assert.equal(await p.locator('#auth-title').textContent(), `Welcome to ${BRAND.name}`);
    assert.equal(await p.locator('.footer').getByText(BRAND.name, { exact: false }).count(), 1);
    assert.equal(await p.locator('body').evaluate((b) => /\bqlearn\b/.test(b.innerText)), false, 'no "qlearn" left on the page');
    // The support link, the logo and the colours (from /static/brand.css under the CSP).
    assert.equal(await p.locator('[data-testid="support-link"]').getAttribute('href'), `mailto:${BRAND.support}`);
    const logoWidth = await p.locator('[data-testid="brand-logo"]').evaluate((img) => img.complete && img.naturalWidth);
    assert.ok(logoWidth > 0, 'the logo loaded');
    assert.equal(await p.locator('link[rel="icon"]').getAttribute('href'), '/static/brand-logo');
    assert.equal(await p.locator('#auth-submit').evaluate((b) => getComputedStyle(b).backgroundColor), BRAND.primaryRgb);
    // Signed in, the header keeps the brand.
    await p.click('#tab-register');
    await p.fill('#auth-email', uniqueEmail('brand'));
    await p.fill('#auth-password', PASSWORD);
    await p.click('#auth-submit');
    await p.locator('#view-dashboard').waitFor({ state: 'visible' });
    assert.equal(await p.locator('[data-testid="brand-name"]').textContent(), BRAND.name);
    // The API viewer: its page title and its heading (the OpenAPI title).
    await p.goto(branded.base + '/docs', { waitUntil: 'load' });
    assert.equal(await p.title(), BRAND.docsTitle);
    await untilText(p.locator('.information-container .title'), new RegExp(`^${BRAND.name.replace(/[.&]/g, '\\$&')}`));
    assert.deepEqual(errors, [], 'no console errors (a CSP violation would be one)');
  } finally {
    await ctx.close();
    await branded.stop();
  }
});
