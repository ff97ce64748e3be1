// Regenerates docs/screenshots/*.png from a running saas-host (QLEARN_BASE_URL).
// Run through scripts/screenshots.sh, which starts a fresh server first.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE, cardClip, launch, startBrandedServer, until, untilText, uniqueEmail, http } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(process.env.SCREENSHOT_DIR || path.join(here, '..', 'docs', 'screenshots'));
fs.mkdirSync(out, { recursive: true });
const DEMO_CALLS = Number(process.env.DEMO_CALLS || 70);

const browser = await launch();
const errors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  const shot = async (name, opts = {}) => {
    if (opts.fullPage) await page.evaluate(() => window.scrollTo(0, 0));
    await page.waitForTimeout(400); // let charts settle
    await page.screenshot({ path: path.join(out, name), ...opts });
    console.log(`wrote ${path.join(out, name)}`);
  };

  await page.goto(BASE + '/');
  await page.locator('#auth-view').waitFor({ state: 'visible' });
  await page.fill('#auth-email', 'ada@example.com');
  await shot('login.png');

  const email = uniqueEmail('demo');
  await page.click('#tab-register');
  await page.fill('#auth-email', email);
  await page.fill('#auth-password', 'a long enough password');
  await page.click('#auth-submit');
  await page.locator('#view-dashboard').waitFor({ state: 'visible' });

  // a gridworld model, trained by the built-in demo
  await page.click('#nav-models');
  await page.click('#new-model-btn');
  await page.fill('#f-name', 'gridworld');
  await page.fill('#f-action_names', 'up, down, left, right');
  await page.fill('#f-learning_rate', '0.5');
  await page.click('#model-form-submit');
  await page.locator('#view-operate').waitFor({ state: 'visible' });
  await untilText(page.locator('#live-status'), /live/);
  await page.fill('#demo-budget', String(DEMO_CALLS));
  await page.click('#demo-run');
  await untilText(page.locator('#demo-status'), /^(Done|Stopped)/, 120000);
  await page.fill('#state-input', '[0, 0]');
  await page.uncheck('#explore-input');
  await page.click('#predict-btn');
  await page.locator('#predict-result').waitFor({ state: 'visible' });
  // fill the feedback form as the gridworld would answer the predicted move
  const moved = [[-1, 0], [1, 0], [0, -1], [0, 1]][Number(await page.locator('#pred-action').textContent())] || [0, 0];
  const next = [Math.min(2, Math.max(0, moved[0])), Math.min(2, Math.max(0, moved[1]))];
  await page.fill('#fb-reward', '-0.04');
  await page.fill('#fb-next-state', `[${next[0]}, ${next[1]}]`);
  await page.waitForTimeout(1500); // usage refresh
  await shot('operate.png', { fullPage: true });

  await page.click('#nav-models');
  await page.click('#new-model-btn');
  await page.locator('#model-editor').waitFor({ state: 'visible' });
  await shot('models.png', { fullPage: true });
  await page.click('#model-form-cancel');

  await page.click('#nav-plans');
  await page.locator('[data-testid="plan-card"]').nth(2).waitFor({ state: 'visible' });
  await shot('plans.png', { fullPage: true });

  await page.click('#nav-keys');
  await page.locator('#view-keys').waitFor({ state: 'visible' });
  for (const name of ['production worker', 'notebook']) {
    await page.fill('#key-name', name);
    await page.click('#key-create');
    await page.locator('#key-created').waitFor({ state: 'visible' });
  }
  await page.click('#key-dismiss');
  await until('two keys listed', async () => (await page.locator('[data-testid="key-row"]').count()) === 2);
  await shot('keys.png');

  await page.click('#nav-dashboard');
  await page.locator('#view-dashboard').waitFor({ state: 'visible' });
  await until('usage counted', async () => Number(await page.locator('#usage-calls').textContent()) > 0);
  await shot('dashboard.png', { fullPage: true });

  await page.setViewportSize({ width: 375, height: 812 });
  await page.mouse.move(370, 800); // no hover effects in the shots
  await page.evaluate(() => { location.hash = '#/operate'; });
  await page.locator('#view-operate').waitFor({ state: 'visible' });
  await untilText(page.locator('#live-status'), /live/);
  await shot('phone.png', { fullPage: false });
  await page.evaluate(() => document.querySelector('#heatmap').closest('.card').scrollIntoView({ block: 'start' }));
  await shot('phone-heatmap.png', { fullPage: false });

  // Decisions and delayed rewards (a user of its own: the free tier's 100 calls
  // went to the demo): a news model logs which section it showed in which
  // context; clicks arrive later, some never (they default to 0 after 8 s).
  await page.setViewportSize({ width: 1280, height: 860 });
  const reg = await http('POST', '/register', { email: uniqueEmail('news'), password: 'a long enough password' });
  const token = reg.body.access_token;
  const pace = () => page.waitForTimeout(260); // under the free tier's 5 requests per second
  const news = await http('POST', '/models', { name: 'news', n_actions: 4, epsilon: 0.2, learning_rate: 0.3,
    action_names: ['sports', 'politics', 'tech', 'culture'] }, token);
  await pace();
  await http('PATCH', `/models/${news.body.id}`, { decisions: { reward_wait_seconds: 8, default_reward: 0 } }, token);
  const contexts = ['morning', 'evening', 'weekend'];
  const clicked = [];
  for (let i = 0; i < 30; i++) {
    await pace();
    const d = await http('POST', '/predict', { model_id: news.body.id, state: contexts[i % 3] }, token);
    if ((i * 7) % 5 < 2) clicked.push({ decision_id: d.body.decision_id, value: 1, final: i % 2 === 0 });
  }
  await pace();
  await http('POST', '/rewards/batch', { model_id: news.body.id, rewards: clicked }, token);
  await page.evaluate(([t]) => { sessionStorage.setItem('qlearn.token', t); }, [token]);
  await page.goto(`${BASE}/#/operate/${news.body.id}`);
  await page.locator('#decisions-card').waitFor({ state: 'visible' });
  await untilText(page.locator('#dstat-decisions'), /^30$/);
  await until('the windows closed', async () => (await page.locator('#dstat-pending').textContent()) === '0', 30000);
  // and a few new decisions with their windows open
  for (const state of ['morning', 'evening']) {
    await page.fill('#state-input', state);
    await page.click('#predict-btn');
    await pace();
  }
  await untilText(page.locator('#dstat-decisions'), /^32$/);
  // The whole card below the sticky header, in a viewport tall enough for it.
  await page.setViewportSize({ width: 1280, height: 1400 });
  const box = await cardClip(page, '#decisions-card');
  await page.waitForTimeout(400);
  await page.screenshot({ path: path.join(out, 'decisions.png'), clip: box });
  console.log(`wrote ${path.join(out, 'decisions.png')}`);

  // White-label (issue 17): the dashboard of a server with a brand configured
  // (name, logo, colours, support link; lib.mjs BRAND).
  const branded = await startBrandedServer();
  try {
    const bctx = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
    const bp = await bctx.newPage();
    bp.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    bp.on('pageerror', (e) => errors.push(e.message));
    await bp.goto(branded.base + '/');
    await bp.locator('#auth-view').waitFor({ state: 'visible' });
    await bp.click('#tab-register');
    await bp.fill('#auth-email', 'ada@acme.example');
    await bp.fill('#auth-password', 'a long enough password');
    await bp.click('#auth-submit');
    await bp.locator('#view-dashboard').waitFor({ state: 'visible' });
    await bp.waitForTimeout(600);
    const file = path.join(out, 'white-label.png');
    await bp.screenshot({ path: file, fullPage: true });
    console.log(`wrote ${file}`);
    await bctx.close();
  } finally {
    await branded.stop();
  }
  if (errors.length) {
    console.error('console errors while taking screenshots:\n' + errors.join('\n'));
    process.exitCode = 1;
  }
} finally {
  await browser.close();
}
