// What the evaluation view's browser test and its screenshot share (issue 18):
// a server of their own whose free plan logs decisions and may run
// evaluations, and a model with a known log (a two-armed bandit).
import fs from 'node:fs';
import path from 'node:path';
import { clientOf, startServer, uniqueEmail } from './lib.mjs';

export const PASSWORD = 'correct horse battery staple';

/**
 * A saas-host (lib.mjs startServer) whose free plan has decision logging and
 * evaluations (20 a day, 2 at once, of up to 100,000 decisions), calls enough for a few hundred
 * decisions, and no advanced algorithms (a SARSA candidate's Apply is
 * refused 403 plan_required). `args` go to `serve`.
 */
export function startEvaluationServer(args = []) {
  return startServer(args, (dir) => {
    const file = path.join(dir, 'limits.json');
    fs.writeFileSync(file, JSON.stringify({
      free: {
        monthly_calls: 100000, max_models: 10, rate_per_second: 1000, burst: 2000,
        features: ['decisions'], evaluations_per_day: 20, evaluations_at_once: 2, evaluation_max_decisions: 100000,
      },
    }));
    return ['--limits-file', file];
  });
}

/** Registers a new user in `page` (the sign-up form of `base`); returns a JSON client with its token. */
export async function registerInPage(page, base, tag) {
  await page.goto(base + '/');
  await page.click('#tab-register');
  await page.fill('#auth-email', uniqueEmail(tag));
  await page.fill('#auth-password', PASSWORD);
  await page.click('#auth-submit');
  await page.locator('#view-dashboard').waitFor({ state: 'visible' });
  return clientOf(base, await page.evaluate(() => sessionStorage.getItem('qlearn.token')));
}

/** A small deterministic generator (mulberry32) of numbers in [0, 1). */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A shop's two-armed bandit: a model (`plain` pays 1 with probability
 * `pays[0]` (0.2), `promo` with `pays[1]` (0.8)) logging its decisions at
 * `epsilon` (0.3), `n`
 * decisions through POST /predict, each rewarded (final) through
 * POST /rewards/batch every 10 decisions (so that the model learns as it
 * goes). Returns {id, rewards (in decision order), mean}.
 */
export async function seedBandit(call, n = 300, name = 'shop', epsilon = 0.3, pays = [0.2, 0.8]) {
  let r = await call('POST', '/models', {
    name, n_actions: 2, action_names: ['plain', 'promo'], epsilon, learning_rate: 0.1, seed: 7,
  });
  if (r.status !== 201) throw new Error(`create model: ${r.status} ${JSON.stringify(r.body)}`);
  const id = r.body.id;
  r = await call('PATCH', `/models/${id}`, { decisions: { reward_wait_seconds: 3600 } });
  if (r.status !== 200) throw new Error(`enable decisions: ${r.status} ${JSON.stringify(r.body)}`);
  const draw = rng(18);
  const rewards = [];
  const batch = [];
  for (let i = 0; i < n; i++) {
    r = await call('POST', '/predict', { model_id: id, state: 0, decision_id: `d${i}` });
    if (r.status !== 200) throw new Error(`predict: ${r.status} ${JSON.stringify(r.body)}`);
    const value = draw() < pays[r.body.action] ? 1 : 0;
    rewards.push(value);
    batch.push({ decision_id: `d${i}`, value, final: true });
    if (batch.length === 10 || i === n - 1) {
      const b = await call('POST', '/rewards/batch', { model_id: id, rewards: batch.splice(0) });
      if (b.status !== 200) throw new Error(`rewards: ${b.status} ${JSON.stringify(b.body)}`);
    }
  }
  return { id, rewards, mean: rewards.reduce((s, v) => s + v, 0) / rewards.length };
}
