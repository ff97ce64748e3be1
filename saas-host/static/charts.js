// Small hand-drawn SVG charts (no library, no CDN). Each chart is drawn at the
// container's real pixel width, so text stays readable on a phone, and redrawn
// when the container is resized.

const NS = 'http://www.w3.org/2000/svg';

function el(name, attrs = {}, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) if (v != null) e.setAttribute(k, String(v));
  if (text != null) e.textContent = text;
  return e;
}

/** "Nice" axis ticks from lo to hi, about `count` of them. */
export function niceTicks(lo, hi, count = 4, minStep = 0) {
  if (!(hi > lo)) { hi = lo + 1; }
  const span = hi - lo;
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const norm = raw / mag;
  const step = Math.max(minStep, (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag);
  const start = Math.floor(lo / step) * step;
  const end = Math.ceil(hi / step) * step;
  const ticks = [];
  for (let v = start; v <= end + step / 2; v += step) ticks.push(Number(v.toFixed(10)));
  return ticks;
}

const fmtTick = (v) => {
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1).replace(/\.0$/, '') + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(1).replace(/\.0$/, '') + 'k';
  return String(Number(v.toFixed(3)));
};

const drawers = new WeakMap();
let observer = null;
function watch(container, draw) {
  drawers.set(container, draw);
  if (typeof ResizeObserver === 'undefined') return;
  if (!observer) {
    observer = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const d = drawers.get(entry.target);
        const w = Math.round(entry.contentRect.width);
        if (d && w > 0 && w !== entry.target.__lastWidth) d();
      }
    });
  }
  observer.observe(container);
}

function widthOf(container, fallback = 640) {
  const w = container.clientWidth;
  return w > 0 ? w : fallback;
}

/**
 * Bar chart of calls per day.
 * days: [{date: "2026-11-01", calls: 3}, ...]; today: "2026-11-28" or null.
 */
export function usageChart(container, days, today) {
  const draw = () => {
    const W = widthOf(container);
    container.__lastWidth = W;
    const H = W < 480 ? 170 : 210;
    const m = { top: 12, right: 8, bottom: 26, left: 36 };
    const iw = W - m.left - m.right;
    const ih = H - m.top - m.bottom;
    const svg = el('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'presentation' });
    const max = Math.max(4, ...days.map((d) => d.calls));
    const ticks = niceTicks(0, max, 4, 1).filter((t) => t >= 0);
    const top = ticks[ticks.length - 1] || 1;
    const y = (v) => m.top + ih - (v / top) * ih;
    for (const t of ticks) {
      svg.append(el('line', { x1: m.left, x2: W - m.right, y1: y(t), y2: y(t), stroke: t === 0 ? '#cdd2dc' : '#eceef3', 'stroke-width': 1 }));
      svg.append(el('text', { x: m.left - 6, y: y(t) + 4, 'text-anchor': 'end', 'font-size': 11 }, fmtTick(t)));
    }
    const n = Math.max(1, days.length);
    const slot = iw / n;
    const bw = Math.max(2, Math.min(22, slot * 0.68));
    const labelEvery = slot < 14 ? 5 : slot < 22 ? 2 : 1;
    days.forEach((d, i) => {
      const day = Number(d.date.slice(8, 10));
      const x = m.left + i * slot + (slot - bw) / 2;
      const isToday = d.date === today;
      const h = Math.max(d.calls > 0 ? 2 : 0, (d.calls / top) * ih);
      const g = el('g');
      const rect = el('rect', {
        x: x.toFixed(1), y: (m.top + ih - h).toFixed(1), width: bw.toFixed(1), height: h.toFixed(1), rx: Math.min(3, bw / 3),
        fill: isToday ? '#4f46e5' : '#a5b4fc', 'data-testid': 'usage-bar', 'data-date': d.date, 'data-calls': d.calls,
      });
      rect.append(el('title', {}, `${d.date}: ${d.calls} call${d.calls === 1 ? '' : 's'}`));
      g.append(rect);
      // A transparent hit area so the tooltip works on empty days too.
      const hit = el('rect', { x: m.left + i * slot, y: m.top, width: slot, height: ih, fill: 'transparent' });
      hit.append(el('title', {}, `${d.date}: ${d.calls} call${d.calls === 1 ? '' : 's'}`));
      g.append(hit);
      const todayDay = today && today.slice(0, 7) === d.date.slice(0, 7) ? Number(today.slice(8, 10)) : null;
      const nearToday = todayDay != null && !isToday && labelEvery > 1 && Math.abs(day - todayDay) < 2 + (slot < 12 ? 1 : 0);
      if ((day === 1 || day % labelEvery === 0 || isToday) && !nearToday) {
        g.append(el('text', {
          x: (m.left + i * slot + slot / 2).toFixed(1), y: H - 8, 'text-anchor': 'middle', 'font-size': 11,
          'font-weight': isToday ? 700 : 400, fill: isToday ? '#4338ca' : null,
        }, String(day)));
      }
      svg.append(g);
    });
    if (days.length === 0) {
      svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty-text' }, 'No usage data'));
    }
    container.replaceChildren(svg);
  };
  draw();
  watch(container, draw);
}

/**
 * Line chart of episode returns, oldest first. Draws the returns and a moving average.
 */
export function learningCurve(container, returns) {
  const draw = () => {
    const W = widthOf(container, 400);
    container.__lastWidth = W;
    const H = W < 480 ? 190 : 230;
    const m = { top: 14, right: 12, bottom: 30, left: 44 };
    const iw = W - m.left - m.right;
    const ih = H - m.top - m.bottom;
    const svg = el('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'presentation' });
    svg.setAttribute('data-points', String(returns.length));
    if (returns.length === 0) {
      svg.append(el('rect', { x: m.left, y: m.top, width: iw, height: ih, fill: '#f7f8fb', rx: 6 }));
      svg.append(el('text', { x: m.left + iw / 2, y: m.top + ih / 2, 'text-anchor': 'middle', class: 'empty-text' },
        'No finished episodes yet'));
      svg.append(el('text', { x: m.left + iw / 2, y: m.top + ih / 2 + 18, 'text-anchor': 'middle', class: 'empty-text', 'font-size': 12 },
        'send an update with done, or run the demo'));
      container.replaceChildren(svg);
      return;
    }
    let lo = Math.min(0, ...returns);
    let hi = Math.max(0, ...returns);
    if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
    const ticks = niceTicks(lo, hi, 4);
    const ymin = ticks[0];
    const ymax = ticks[ticks.length - 1];
    const n = returns.length;
    const x = (i) => m.left + (n === 1 ? iw / 2 : (i / (n - 1)) * iw);
    const y = (v) => m.top + ih - ((v - ymin) / (ymax - ymin)) * ih;
    for (const t of ticks) {
      svg.append(el('line', { x1: m.left, x2: W - m.right, y1: y(t), y2: y(t), stroke: t === 0 ? '#b8bfcc' : '#eceef3', 'stroke-width': 1 }));
      svg.append(el('text', { x: m.left - 6, y: y(t) + 4, 'text-anchor': 'end', 'font-size': 11 }, fmtTick(t)));
    }
    // x labels: first and last episode of the window
    svg.append(el('text', { x: m.left, y: H - 10, 'text-anchor': 'start', 'font-size': 11 }, n === 1 ? '1 episode' : 'older'));
    if (n > 1) svg.append(el('text', { x: W - m.right, y: H - 10, 'text-anchor': 'end', 'font-size': 11 }, `latest (${n} episodes)`));
    const pts = returns.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(el('polyline', { points: pts, fill: 'none', stroke: '#a5b4fc', 'stroke-width': 1.5, 'stroke-linejoin': 'round' }));
    // moving average over a window that grows with the data
    const w = Math.max(1, Math.min(10, Math.round(n / 6)));
    if (w > 1) {
      const avg = returns.map((_, i) => {
        const s = Math.max(0, i - w + 1);
        const slice = returns.slice(s, i + 1);
        return slice.reduce((a, b) => a + b, 0) / slice.length;
      });
      svg.append(el('polyline', {
        points: avg.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' '),
        fill: 'none', stroke: '#4f46e5', 'stroke-width': 2.5, 'stroke-linejoin': 'round', 'stroke-linecap': 'round',
      }));
    }
    if (n <= 60) {
      returns.forEach((v, i) => {
        const c = el('circle', { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 3, fill: '#4f46e5', 'data-testid': 'curve-point' });
        c.append(el('title', {}, `return ${fmtTick(v)}`));
        svg.append(c);
      });
    }
    container.replaceChildren(svg);
  };
  draw();
  watch(container, draw);
}

/** A bucket width (seconds) that cuts `span` seconds into at most 40 bars. */
function bucketSeconds(span) {
  const steps = [1, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400];
  return steps.find((s) => span / s <= 40) || 30 * 86400;
}

/**
 * Decisions and rewards over time: per time bucket, the decisions logged
 * (light bars) and the rewards counted for them (dark bars, beside them).
 * decisions: the listing's decisions, oldest first ({time, rewards, ...}).
 */
export function decisionsChart(container, decisions) {
  const draw = () => {
    const W = widthOf(container, 400);
    container.__lastWidth = W;
    const H = W < 480 ? 170 : 200;
    const m = { top: 12, right: 10, bottom: 28, left: 40 };
    const iw = W - m.left - m.right;
    const ih = H - m.top - m.bottom;
    const svg = el('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'presentation' });
    if (decisions.length === 0) {
      svg.append(el('rect', { x: m.left, y: m.top, width: iw, height: ih, fill: '#f7f8fb', rx: 6 }));
      svg.append(el('text', { x: m.left + iw / 2, y: m.top + ih / 2, 'text-anchor': 'middle', class: 'empty-text' }, 'No decisions yet'));
      container.replaceChildren(svg);
      return;
    }
    const times = decisions.map((d) => Date.parse(d.time) / 1000);
    const t0 = Math.min(...times);
    const step = bucketSeconds(Math.max(...times) - t0);
    const start = Math.floor(t0 / step) * step;
    const n = Math.floor((Math.max(...times) - start) / step) + 1;
    const buckets = Array.from({ length: n }, () => ({ decisions: 0, rewards: 0 }));
    decisions.forEach((d, i) => {
      const b = buckets[Math.min(n - 1, Math.floor((times[i] - start) / step))];
      b.decisions += 1;
      b.rewards += d.rewards || 0;
    });
    const max = Math.max(2, ...buckets.map((b) => Math.max(b.decisions, b.rewards)));
    const ticks = niceTicks(0, max, 4, 1).filter((t) => t >= 0);
    const top = ticks[ticks.length - 1] || 1;
    const y = (v) => m.top + ih - (v / top) * ih;
    for (const t of ticks) {
      svg.append(el('line', { x1: m.left, x2: W - m.right, y1: y(t), y2: y(t), stroke: t === 0 ? '#cdd2dc' : '#eceef3', 'stroke-width': 1 }));
      svg.append(el('text', { x: m.left - 6, y: y(t) + 4, 'text-anchor': 'end', 'font-size': 11 }, fmtTick(t)));
    }
    const slot = iw / n;
    const bw = Math.max(1.5, Math.min(14, slot * 0.36));
    const label = (t) => new Date(t * 1000).toISOString().slice(step >= 86400 ? 5 : 11, step >= 86400 ? 10 : step >= 60 ? 16 : 19);
    buckets.forEach((b, i) => {
      const x = m.left + i * slot + slot / 2;
      const g = el('g', { 'data-testid': 'decision-bucket', 'data-decisions': b.decisions, 'data-rewards': b.rewards });
      const tip = `${label(start + i * step)} UTC: ${b.decisions} decision${b.decisions === 1 ? '' : 's'}, ${b.rewards} reward${b.rewards === 1 ? '' : 's'}`;
      for (const [v, dx, fill] of [[b.decisions, -bw, '#a5b4fc'], [b.rewards, 0, '#4338ca']]) {
        const hgt = Math.max(v > 0 ? 2 : 0, (v / top) * ih);
        g.append(el('rect', { x: (x + dx).toFixed(1), y: (m.top + ih - hgt).toFixed(1), width: bw.toFixed(1), height: hgt.toFixed(1), rx: Math.min(2, bw / 3), fill }));
      }
      const hit = el('rect', { x: m.left + i * slot, y: m.top, width: slot, height: ih, fill: 'transparent' });
      hit.append(el('title', {}, tip));
      g.append(hit);
      svg.append(g);
    });
    svg.append(el('text', { x: m.left, y: H - 9, 'text-anchor': 'start', 'font-size': 11 }, `${label(start)} UTC`));
    const per = step < 60 ? `${step} s` : step < 3600 ? `${step / 60} min` : step < 86400 ? `${step / 3600} h` : `${step / 86400} d`;
    if (n > 1) svg.append(el('text', { x: W - m.right, y: H - 9, 'text-anchor': 'end', 'font-size': 11 }, `${label(start + (n - 1) * step)} (bars of ${per})`));
    container.replaceChildren(svg);
  };
  draw();
  watch(container, draw);
}

/**
 * Diverging color for a Q-value relative to the largest magnitude on the page:
 * warm red below zero, white at zero, blue above. Returns [background, text color].
 */
export function heatColor(v, maxAbs) {
  if (!(maxAbs > 0) || !Number.isFinite(v)) return ['rgb(247,247,247)', '#1c2333'];
  const t = Math.max(-1, Math.min(1, v / maxAbs));
  const mid = [247, 247, 247];
  const end = t < 0 ? [214, 96, 77] : [67, 147, 195];
  const a = Math.abs(t);
  const c = mid.map((m, i) => Math.round(m + (end[i] - m) * a));
  return [`rgb(${c[0]},${c[1]},${c[2]})`, a > 0.6 ? '#ffffff' : '#1c2333'];
}

/**
 * Offline evaluation (issue 18): one row per policy and estimator, its
 * estimate as a point on its confidence interval, against the logged
 * behaviour's mean reward (a dashed line, its interval a band). A row with
 * insufficient support says so instead of drawing a number.
 * rows: [{policy, estimator, value, low, high, insufficient}] (value null when insufficient);
 * logged: {mean, low, high} or null.
 */
export function intervalChart(container, rows, logged) {
  const draw = () => {
    const W = widthOf(container, 400);
    container.__lastWidth = W;
    const rowH = 24;
    const m = { top: 24, right: 16, bottom: 28, left: Math.min(210, Math.max(120, W * 0.34)) };
    const H = m.top + m.bottom + Math.max(1, rows.length) * rowH;
    const iw = W - m.left - m.right;
    const svg = el('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'presentation' });
    const xs = [];
    for (const r of rows) if (r.value != null) xs.push(r.value, r.low ?? r.value, r.high ?? r.value);
    if (logged) xs.push(logged.mean, logged.low ?? logged.mean, logged.high ?? logged.mean);
    const finite = xs.filter(Number.isFinite);
    let lo = finite.length ? Math.min(...finite) : 0;
    let hi = finite.length ? Math.max(...finite) : 1;
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const ticks = niceTicks(lo, hi, W < 480 ? 3 : 5);
    const xmin = ticks[0];
    const xmax = ticks[ticks.length - 1];
    const x = (v) => m.left + ((Math.min(xmax, Math.max(xmin, v)) - xmin) / (xmax - xmin)) * iw;
    const bottom = H - m.bottom;
    for (const t of ticks) {
      svg.append(el('line', { x1: x(t), x2: x(t), y1: m.top - 4, y2: bottom, stroke: '#eceef3', 'stroke-width': 1 }));
      svg.append(el('text', { x: x(t), y: H - 10, 'text-anchor': 'middle', 'font-size': 11 }, fmtTick(t)));
    }
    if (logged && Number.isFinite(logged.mean)) {
      if (Number.isFinite(logged.low) && Number.isFinite(logged.high)) {
        svg.append(el('rect', {
          x: x(logged.low).toFixed(1), y: m.top - 4, width: Math.max(1, x(logged.high) - x(logged.low)).toFixed(1),
          height: bottom - m.top + 4, fill: '#fdf0d9', 'data-testid': 'eval-logged-band',
        }));
      }
      const line = el('line', {
        x1: x(logged.mean), x2: x(logged.mean), y1: m.top - 8, y2: bottom, stroke: '#b45309', 'stroke-width': 1.5,
        'stroke-dasharray': '5 3', 'data-testid': 'eval-logged-line', 'data-value': logged.mean,
      });
      line.append(el('title', {}, `logged reward: mean ${fmtTick(logged.mean)}`));
      svg.append(line);
      const right = x(logged.mean) > m.left + iw * 0.7;
      svg.append(el('text', {
        x: x(logged.mean) + (right ? -4 : 4), y: m.top - 10, 'text-anchor': right ? 'end' : 'start', 'font-size': 11, fill: '#b45309',
      }, `logged ${fmtTick(logged.mean)}`));
    }
    rows.forEach((r, i) => {
      const cy = m.top + i * rowH + rowH / 2;
      const g = el('g', {
        'data-testid': 'eval-interval', 'data-policy': r.policy, 'data-estimator': r.estimator,
        'data-value': r.value ?? '', 'data-low': r.low ?? '', 'data-high': r.high ?? '',
      });
      if (i > 0 && rows[i - 1].policy !== r.policy) {
        g.append(el('line', { x1: 4, x2: W - m.right, y1: cy - rowH / 2, y2: cy - rowH / 2, stroke: '#e3e6ee', 'stroke-width': 1 }));
      }
      const first = i === 0 || rows[i - 1].policy !== r.policy;
      const name = first ? `${r.policy} · ${r.estimator}` : r.estimator;
      const maxChars = Math.max(8, Math.floor((m.left - 10) / 7.4));
      const shown = name.length > maxChars ? `${name.slice(0, maxChars - 1)}…` : name;
      g.append(el('text', { x: m.left - 8, y: cy + 4, 'text-anchor': 'end', 'font-size': 12, 'font-weight': first ? 600 : 400 }, shown));
      if (r.value == null) {
        g.append(el('text', { x: m.left + 4, y: cy + 4, 'font-size': 12, class: 'empty-text', 'font-style': 'italic' }, 'insufficient support'));
      } else {
        const a = x(r.low ?? r.value);
        const b = x(r.high ?? r.value);
        g.append(el('line', { x1: a, x2: b, y1: cy, y2: cy, stroke: '#818cf8', 'stroke-width': 3, 'stroke-linecap': 'round' }));
        for (const cx of [a, b]) g.append(el('line', { x1: cx, x2: cx, y1: cy - 5, y2: cy + 5, stroke: '#818cf8', 'stroke-width': 1.5 }));
        g.append(el('circle', { cx: x(r.value).toFixed(1), cy, r: 4.5, fill: '#4338ca', stroke: '#fff', 'stroke-width': 1.5 }));
      }
      const tip = r.value == null ? `${r.policy}, ${r.estimator}: insufficient support`
        : `${r.policy}, ${r.estimator}: ${fmtTick(r.value)} [${fmtTick(r.low ?? r.value)}, ${fmtTick(r.high ?? r.value)}]`;
      const hit = el('rect', { x: 0, y: cy - rowH / 2, width: W, height: rowH, fill: 'transparent' });
      hit.append(el('title', {}, name === shown ? tip : `${name}: ${tip.split(': ').slice(1).join(': ')}`));
      g.append(hit);
      svg.append(g);
    });
    if (rows.length === 0) {
      svg.append(el('text', { x: W / 2, y: m.top + rowH / 2 + 4, 'text-anchor': 'middle', class: 'empty-text' }, 'No estimates'));
    }
    container.replaceChildren(svg);
  };
  draw();
  watch(container, draw);
}
