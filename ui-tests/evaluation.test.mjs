// The Operate page's offline evaluation view (issue 18) in headless Chromium,
// on a server of its own (evaluation-fixture.mjs): a bandit's decisions and
// rewards posted through the API, an evaluation started from the page, its
// result (each policy's estimates with their intervals against the logged
// reward, ESS, support, the chart), a candidate applied, another refused,
// past evaluations reopened, and a queued job cancelled.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, until, untilText } from './lib.mjs';
import { registerInPage, seedBandit, startEvaluationServer } from './evaluation-fixture.mjs';

let browser;
let server;
let page;
const consoleErrors = [];
let expectStatus = null; // statuses the current step provokes on purpose

before(async () => {
  server = await startEvaluationServer();
  browser = await launch();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const m = msg.text().match(/status of (\d{3})/);
    if (m && expectStatus?.has(Number(m[1]))) return;
    consoleErrors.push(msg.text());
  });
  page.on('pageerror', (err) => consoleErrors.push(`uncaught: ${err.message}`));
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const rows = () => page.locator('[data-testid="eval-policy-row"]');
const row = (kind, name) => page.locator(`[data-testid="eval-policy-row"][data-kind="${kind}"]${name ? `[data-name="${name}"]` : ''}`);
const estimates = (r) => r.locator('[data-testid="eval-estimate"]').evaluateAll(
  (es) => es.map((e) => ({ estimator: e.dataset.estimator, value: e.dataset.value === '' ? null : Number(e.dataset.value), text: e.textContent })));

/** Presses Start and waits for the new job (not the one shown before) to be done. */
async function startAndFinish() {
  const before = await page.locator('#eval-job').getAttribute('data-eval-id');
  await page.click('#eval-start');
  await until('the new job done', async () => {
    const job = page.locator('#eval-job');
    return (await job.getAttribute('data-eval-id')) !== before && (await job.getAttribute('data-status')) === 'done';
  }, 60000);
}

test('the evaluation view, end to end', async (t) => {
  let call;
  let shop;

  await t.test('register in the page; a bandit logged through the API', async () => {
    call = await registerInPage(page, server.base, 'eval');
    shop = await seedBandit(call, 300);
  });

  await t.test('a model without decisions shows no evaluation view', async () => {
    const plain = await call('POST', '/models', { name: 'plain', n_actions: 2 });
    await page.goto(`${server.base}/#/operate/${plain.body.id}`);
    await page.locator('#model-stats').waitFor({ state: 'visible' });
    await until('the card hidden', async () => page.locator('#evaluation-card').isHidden());
  });

  await t.test('start an evaluation: policies, two candidates, all the log', async () => {
    await page.goto(`${server.base}/#/operate/${shop.id}`);
    await page.locator('#evaluation-card').waitFor({ state: 'visible' });
    await untilText(page.locator('#eval-history-empty'), /No evaluations/);
    for (const kind of ['greedy', 'exploring', 'uniform', 'logged', 'baseline']) {
      await page.check(`input[name="eval-policy"][value="${kind}"]`);
    }
    await page.click('#eval-add-candidate');
    const c1 = page.locator('[data-testid="eval-candidate"]').nth(0);
    await c1.locator('[data-field="name"]').fill('lr 0.05');
    await c1.locator('[data-field="learning_rate"]').fill('0.05');
    await c1.locator('[data-field="epsilon"]').fill('0.1');
    assert.equal(await c1.locator('[data-field="learning_rate"]').getAttribute('placeholder'), '0.1', "the model's value as a hint");
    await page.click('#eval-add-candidate');
    const c2 = page.locator('[data-testid="eval-candidate"]').nth(1);
    await c2.locator('[data-field="name"]').fill('sarsa');
    await c2.locator('[data-field="algorithm"]').selectOption('sarsa');
    await page.selectOption('#eval-range', 'all');
    await page.click('#eval-start');
    await page.locator('#eval-job').waitFor({ state: 'visible' });
    assert.match(await page.locator('#eval-job-status').textContent(), /^(queued|running|done)$/);
    await until('the job done', async () => (await page.locator('#eval-job').getAttribute('data-status')) === 'done', 60000);
    await page.locator('#eval-result').waitFor({ state: 'visible' });
    assert.ok(await page.locator('#eval-cancel').isHidden(), 'nothing to cancel once done');
  });

  await t.test('the result: each policy with its estimates, intervals, ESS and support', async () => {
    const kinds = await rows().evaluateAll((rs) => rs.map((r) => r.dataset.kind + (r.dataset.name ? `:${r.dataset.name}` : '')));
    assert.deepEqual(kinds, ['greedy', 'exploring', 'uniform', 'logged', 'baseline', 'candidate:lr 0.05', 'candidate:sarsa']);
    assert.match(await page.locator('#eval-summary').textContent(), /^300 decisions, one step each; logged reward [\d.]+ \[[\d.]+, [\d.]+\]\.$/);
    // The logged policy's IPS is the plain mean of the rewards posted.
    const logged = await estimates(row('logged'));
    const ips = logged.find((e) => e.estimator === 'ips');
    assert.ok(Math.abs(ips.value - shop.mean) < 1e-9, `logged IPS ${ips.value} vs mean ${shop.mean}`);
    const line = Number(await page.locator('[data-testid="eval-logged-line"]').getAttribute('data-value'));
    assert.ok(Math.abs(line - shop.mean) < 1e-9, `the logged line at ${line}, the mean is ${shop.mean}`);
    // Greedy (promo pays 0.8) beats the log; uniform pays about 0.5.
    const greedy = await estimates(row('greedy'));
    assert.deepEqual(greedy.map((e) => e.estimator), ['ips', 'snips', 'doubly_robust']);
    for (const e of greedy) {
      assert.ok(e.value > 0.6 && e.value <= 1, `greedy ${e.estimator} ${e.value}`);
      assert.match(e.text, /^(IPS|SNIPS|DR)[\d.]+ \[[\d.]+, [\d.]+\]/, e.text);
    }
    const uniform = await estimates(row('uniform'));
    assert.ok(uniform.every((e) => e.value > 0.3 && e.value < 0.7), JSON.stringify(uniform));
    // ESS and support as numbers and shares.
    const ess = Number(await row('greedy').locator('[data-testid="eval-ess"]').getAttribute('data-value'));
    assert.ok(ess > 10 && ess <= 300, `ess ${ess}`);
    assert.match(await row('greedy').locator('[data-testid="eval-support"]').textContent(), /^\d+(\.\d)? %$/);
    assert.equal(await row('logged').locator('[data-testid="eval-support"]').textContent(), '100 %');
    // This log was written without baseline actions: that policy's error, no number.
    assert.equal((await estimates(row('baseline'))).length, 0);
    assert.match(await row('baseline').locator('[data-testid="eval-policy-error"]').textContent(), /\w+ .*baseline/i);
    assert.equal(await row('baseline').locator('[data-testid="eval-ess"]').textContent(), '–');
    // Only candidates can be applied.
    assert.equal(await page.locator('[data-testid="eval-apply"]').count(), 2);
    assert.equal(await row('greedy').locator('[data-testid="eval-apply"]').count(), 0);
  });

  await t.test('the chart: a point on its interval per policy and estimator, the logged line', async () => {
    const drawn = await page.locator('#eval-chart [data-testid="eval-interval"]').evaluateAll((gs) => gs.map((g) => ({
      policy: g.dataset.policy, estimator: g.dataset.estimator,
      value: g.dataset.value === '' ? null : Number(g.dataset.value),
      low: g.dataset.low === '' ? null : Number(g.dataset.low), high: g.dataset.high === '' ? null : Number(g.dataset.high),
      circles: g.querySelectorAll('circle').length, text: g.textContent,
    })));
    const listed = await page.locator('[data-testid="eval-estimate"]').count();
    assert.equal(drawn.length, listed, 'one chart row per estimate in the table');
    for (const d of drawn) {
      if (d.value === null) {
        assert.equal(d.circles, 0);
        assert.match(d.text, /insufficient support/);
      } else {
        assert.equal(d.circles, 1);
        assert.ok(d.low <= d.value && d.value <= d.high, JSON.stringify(d));
      }
    }
    assert.ok(drawn.some((d) => d.policy === 'Greedy' && d.estimator === 'IPS' && d.value !== null));
  });

  await t.test('a log without exploration: "insufficient support", no number', async () => {
    // Exploration off, every action paying 1: once the first rewards are
    // learned (the tie at p = 0.5 broken) the rule takes its action with
    // probability 1, and uniform's coverage of the log is about 0.6.
    const rule = await seedBandit(call, 40, 'rule', 0, [1, 1]);
    await page.goto(`${server.base}/#/operate/${rule.id}`);
    await page.locator('#evaluation-card').waitFor({ state: 'visible' });
    await until('the form reset for this model', async () => (await page.locator('[data-testid="eval-candidate"]').count()) === 0);
    for (const kind of ['greedy', 'exploring', 'baseline']) await page.uncheck(`input[name="eval-policy"][value="${kind}"]`);
    for (const kind of ['uniform', 'logged']) await page.check(`input[name="eval-policy"][value="${kind}"]`);
    await startAndFinish();
    const logged = await estimates(row('logged'));
    assert.ok(logged.length === 3 && logged.every((e) => e.value !== null), 'the logged policy itself is supported');
    const uniform = await estimates(row('uniform'));
    assert.equal(uniform.length, 3);
    for (const e of uniform) {
      assert.equal(e.value, null, JSON.stringify(e));
      assert.match(e.text, /^(IPS|SNIPS|DR)insufficient support coverage 0\.[5-8]\d* below 0\.95$/, e.text);
    }
    const drawn = await page.locator('#eval-chart [data-testid="eval-interval"][data-policy="Uniform random"]').evaluateAll(
      (gs) => gs.map((g) => [g.dataset.value, g.querySelectorAll('circle').length, g.textContent]));
    assert.deepEqual(drawn.map(([v, c]) => [v, c]), [['', 0], ['', 0], ['', 0]]);
    assert.ok(drawn.every(([, , text]) => /insufficient support/.test(text)));
    await page.goto(`${server.base}/#/operate/${shop.id}`);
    // The shop's one job, opened by its id: until the shop's history has
    // loaded, the list still shows the rule model's jobs, and opening one of
    // those under the shop is a 404 (seen in CI).
    const jobs = (await call('GET', `/models/${shop.id}/evaluations`)).body.evaluations;
    assert.equal(jobs.length, 1);
    await page.locator(`[data-testid="eval-history-row"][data-eval-id="${jobs[0].id}"] [data-action="open"]`).click();
    await until('the first job reopened', async () => (await rows().count()) === 7);
  });

  await t.test('Apply a candidate: confirmed, PATCHed, the model changed', async () => {
    await row('candidate', 'lr 0.05').locator('[data-testid="eval-apply"]').click();
    await page.locator('#confirm-dialog').waitFor({ state: 'visible' });
    assert.match(await page.locator('#confirm-text').textContent(), /α 0\.05 · ε 0\.1/);
    await page.click('#confirm-ok');
    await untilText(page.locator('#eval-apply-status'), /^Applied “lr 0\.05”: α 0\.05 · ε 0\.1\.$/);
    const m = await call('GET', `/models/${shop.id}`);
    assert.equal(m.body.learning_rate, 0.05);
    assert.equal(m.body.epsilon, 0.1);
    // The form's hints follow the model's new values.
    await page.click('#eval-add-candidate');
    await until('the new learning rate as the hint', async () =>
      (await page.locator('[data-testid="eval-candidate"]').last().locator('[data-field="learning_rate"]').getAttribute('placeholder')) === '0.05');
  });

  await t.test("Apply a candidate the plan does not allow: the server's 403 shown", async () => {
    expectStatus = new Set([403]);
    try {
      await row('candidate', 'sarsa').locator('[data-testid="eval-apply"]').click();
      await page.click('#confirm-ok');
      await untilText(page.locator('#eval-apply-status'), /^Not applied: .*advanced_algorithms/);
      assert.equal(await page.locator('#eval-apply-status').getAttribute('data-code'), 'plan_required');
      assert.equal(await page.locator('#eval-apply-status').getAttribute('data-state'), 'error');
    } finally { expectStatus = null; }
    const m = await call('GET', `/models/${shop.id}`);
    assert.equal(m.body.algorithm, 'q_learning', 'unchanged');
  });

  await t.test('past evaluations: listed newest first, reopened', async () => {
    while (await page.locator('[data-testid="eval-candidate"]').count() > 0) {
      await page.locator('[data-testid="eval-candidate"] button', { hasText: 'Remove' }).first().click();
    }
    await page.check('input[name="eval-policy"][value="greedy"]');
    for (const kind of ['exploring', 'uniform', 'logged', 'baseline']) await page.uncheck(`input[name="eval-policy"][value="${kind}"]`);
    await page.selectOption('#eval-range', 'day');
    await startAndFinish();
    assert.deepEqual(await rows().evaluateAll((rs) => rs.map((r) => r.dataset.kind)), ['greedy']);
    const second = await page.locator('#eval-job').getAttribute('data-eval-id');
    const jobs = await call('GET', `/models/${shop.id}/evaluations`);
    assert.equal(jobs.body.evaluations[0].id, second);
    assert.ok(jobs.body.evaluations[0].request.since > Date.now() - 25 * 3600 * 1000, 'the last 24 hours asked for');
    const listed = await until('both listed', async () => {
      const ids = await page.locator('[data-testid="eval-history-row"]').evaluateAll((rs) => rs.map((r) => r.dataset.evalId));
      return ids.length === 2 && ids;
    });
    assert.deepEqual(listed, jobs.body.evaluations.map((j) => j.id));
    await page.locator(`[data-testid="eval-history-row"][data-eval-id="${listed[1]}"] [data-action="open"]`).click();
    await until('the first reopened', async () => (await page.locator('#eval-job').getAttribute('data-eval-id')) === listed[1]);
    assert.equal(await rows().count(), 7);
  });

  await t.test('no console errors', async () => {
    assert.deepEqual(consoleErrors, []);
  });
});

test('a queued evaluation is shown waiting and can be cancelled', async () => {
  // No evaluation workers on this server: a job stays queued until cancelled.
  const idle = await startEvaluationServer(['--evaluation-workers', '0']);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const p = await context.newPage();
    const errors = [];
    p.on('pageerror', (err) => errors.push(`uncaught: ${err.message}`));
    p.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()); });
    const call = await registerInPage(p, idle.base, 'queued');
    const shop = await seedBandit(call, 20);
    await p.goto(`${idle.base}/#/operate/${shop.id}`);
    await p.locator('#evaluation-card').waitFor({ state: 'visible' });
    await p.click('#eval-start');
    await untilText(p.locator('#eval-job-status'), /^queued$/);
    await untilText(p.locator('#eval-job-text'), /^waiting for a worker/);
    assert.ok(await p.locator('#eval-progress').isVisible(), 'the progress bar while it waits');
    const eid = await p.locator('#eval-job').getAttribute('data-eval-id');
    await p.waitForTimeout(1500); // polled, still queued
    assert.equal(await p.locator('#eval-job').getAttribute('data-status'), 'queued');
    await p.click('#eval-cancel');
    await untilText(p.locator('#eval-job-status'), /^cancelled$/);
    assert.ok(await p.locator('#eval-cancel').isHidden());
    assert.ok(await p.locator('#eval-result').isHidden(), 'no result');
    const j = await call('GET', `/models/${shop.id}/evaluations/${eid}`);
    assert.equal(j.body.status, 'cancelled');
    await untilText(p.locator(`[data-testid="eval-history-row"][data-eval-id="${eid}"] .tag`), /^cancelled$/);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
    await idle.stop();
  }
});
