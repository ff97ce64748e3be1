// docs/screenshots/evaluation.png: the Operate page's offline evaluation view
// (issue 18) after a finished evaluation, on a server of its own
// (evaluation-fixture.mjs). Run by scripts/screenshots.sh after
// screenshots.mjs, or alone: `bash scripts/screenshots.sh evaluation`.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cardClip, launch, until } from './lib.mjs';
import { registerInPage, seedBandit, startEvaluationServer } from './evaluation-fixture.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(process.env.SCREENSHOT_DIR || path.join(here, '..', 'docs', 'screenshots'));

const server = await startEvaluationServer();
const browser = await launch();
const errors = [];
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 2400 }, deviceScaleFactor: 1 })).newPage();
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(e.message));
  const call = await registerInPage(page, server.base, 'shop');
  const shop = await seedBandit(call, 400, 'checkout offer');
  await page.goto(`${server.base}/#/operate/${shop.id}`);
  await page.locator('#evaluation-card').waitFor({ state: 'visible' });
  for (const kind of ['greedy', 'uniform', 'logged']) await page.check(`input[name="eval-policy"][value="${kind}"]`);
  for (const [name, field, value] of [['slower learning', 'learning_rate', '0.02'], ['less exploration', 'epsilon', '0.05']]) {
    await page.click('#eval-add-candidate');
    const c = page.locator('[data-testid="eval-candidate"]').last();
    await c.locator('[data-field="name"]').fill(name);
    await c.locator(`[data-field="${field}"]`).fill(value);
  }
  await page.click('#eval-start');
  await until('the evaluation done', async () => (await page.locator('#eval-job').getAttribute('data-status')) === 'done', 60000);
  await page.locator('[data-testid="eval-history-row"]').first().waitFor();
  const box = await cardClip(page, '#evaluation-card');
  await page.waitForTimeout(400);
  const file = path.join(out, 'evaluation.png');
  await page.screenshot({ path: file, clip: box });
  console.log(`wrote ${file}`);
  if (errors.length) {
    console.error('console errors while taking the screenshot:\n' + errors.join('\n'));
    process.exitCode = 1;
  }
} finally {
  await browser.close();
  await server.stop();
}
