// Regenerates docs/screenshots/*.png from a running saas-host (QLEARN_BASE_URL).
// Run through scripts/screenshots.sh, which starts a fresh server first.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE, launch, until, untilText, uniqueEmail } from './lib.mjs';

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
  if (errors.length) {
    console.error('console errors while taking screenshots:\n' + errors.join('\n'));
    process.exitCode = 1;
  }
} finally {
  await browser.close();
}
