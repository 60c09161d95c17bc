// One node: each of its metrics as a time-series chart over the chosen range, grouped by the
// collector (plugin) that sends it. `?at=<Unix seconds>` centres the range on that time and
// marks it (the anomalies page links here so).

import { rangeQuery, series } from './api.js';
import { drawChart } from './chart.js';
import {
  el,
  errorBox,
  formatTime,
  promString,
  rangeParam,
  rangeSeconds,
  rangeSelect,
  stepFor,
} from './ui.js';

/** Counters (growing totals) are shown as per-second rates by default. */
const COUNTER = new RegExp(
  [
    '(_total|_total_us|_j|_joules)$',
    '^(rx|tx|read|write)_(bytes|packets|errors|drops|ops)$',
    '^(ctxt|intr|instr|cycles|oom_kill|pgfault|pgmajfault|pgpgin|pgpgout|pswpin|pswpout)$',
  ].join('|'),
);
/** Labels every chart of the page shares: left out of the legends. */
const NODE_LABELS = ['__name__', 'org', 'cluster', 'node', 'plugin', 'chnl'];
/** Range queries run at once. */
const PARALLEL = 4;

export function renderNode(main, params, path) {
  const node = path[0] || '';
  const range = rangeParam(params, '1h');
  const at = params.has('at') ? Number(params.get('at')) : null;
  let generation = 0;

  const go = (changes) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null) next.delete(k);
      else next.set(k, v);
    }
    location.hash = `#/node/${encodeURIComponent(node)}?${next}`;
  };
  const body = el('div', { class: 'charts' });
  main.append(
    el('h1', {}, el('a', { href: '#/overview' }, 'Overview'), ' › ', node),
    el(
      'div',
      { class: 'toolbar' },
      rangeSelect(range, (e) => go({ range: e.target.value })),
      el('button', { type: 'button', onclick: () => load() }, 'Refresh'),
      at === null
        ? null
        : el(
            'span',
            { class: 'pin' },
            `Around ${formatTime(at)} `,
            el('button', { type: 'button', onclick: () => go({ at: null }) }, 'Now'),
          ),
    ),
    body,
  );

  async function load() {
    const mine = ++generation;
    const seconds = rangeSeconds(range);
    const end = at === null ? Date.now() / 1000 : at + seconds / 2;
    const start = end - seconds;
    const step = stepFor(seconds);
    body.replaceChildren(el('p', { class: 'note' }, 'Loading…'));
    let labelSets;
    try {
      labelSets = await series(`{node=${promString(node)}}`, start, end);
    } catch (error) {
      body.replaceChildren(errorBox(error));
      return;
    }
    if (mine !== generation) return;
    const byPlugin = new Map();
    for (const labels of labelSets) {
      // Series without a plugin label are selected with plugin="" (PromQL: label absent).
      const plugin = labels.plugin || '';
      if (!byPlugin.has(plugin)) byPlugin.set(plugin, new Set());
      byPlugin.get(plugin).add(labels.__name__);
    }
    if (byPlugin.size === 0) {
      body.replaceChildren(el('p', { class: 'note' }, `No series of node ${node} in this range.`));
      return;
    }
    body.replaceChildren();
    const jobs = [];
    for (const plugin of [...byPlugin.keys()].sort()) {
      body.append(el('h2', {}, plugin || '(no plugin)'));
      const grid = el('div', { class: 'chart-grid' });
      body.append(grid);
      for (const metric of [...byPlugin.get(plugin)].sort()) {
        const matchers = { __name__: metric, node, plugin };
        const selector = `{${Object.entries(matchers)
          .map(([name, value]) => `${name}=${promString(value)}`)
          .join(', ')}}`;
        jobs.push(chartCard(grid, metric, selector, { range, start, end, step, at }));
      }
    }
    // A few at a time, so a node with many metrics does not queue up the server.
    const queue = [...jobs];
    const worker = async () => {
      while (queue.length && mine === generation) await queue.shift()();
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
  }

  load();
  return () => {
    generation += 1;
  };
}

/** A card for one metric; returns the function that (re)draws it. */
function chartCard(grid, metric, selector, span) {
  const rateWindow = `${Math.max(60, 4 * span.step)}s`;
  let asRate = COUNTER.test(metric);
  const title = el('h3');
  const plot = el('div', { class: 'chart', 'data-metric': metric });
  const toggle = el('button', {
    type: 'button',
    class: 'small',
    onclick: () => {
      asRate = !asRate;
      draw();
    },
  });
  const open = el('a', { class: 'small' }, 'query');
  grid.append(el('section', { class: 'card' }, el('header', {}, title, toggle, open), plot));

  const query = () => (asRate ? `rate(${selector}[${rateWindow}])` : selector);
  async function draw() {
    title.textContent = asRate ? `${metric} (per second)` : metric;
    toggle.textContent = asRate ? 'raw' : 'rate';
    const q = query();
    open.href = `#/query?${new URLSearchParams({ lang: 'promql', q, range: span.range })}`;
    try {
      const data = await rangeQuery(q, span.start, span.end, span.step);
      drawChart(plot, data.result, {
        range: [span.start, span.end],
        marker: span.at ?? undefined,
        hide: NODE_LABELS,
        name: metric,
      });
    } catch (error) {
      plot.replaceChildren(errorBox(error));
    }
  }
  return draw;
}
