// Cluster overview: every node as a cell of a heat map of CPU load, power or temperature,
// refreshed every few seconds; a cell links to the node's page.

import { instantQuery, labelValues } from './api.js';
import { el, errorBox, formatNumber } from './ui.js';

/** What the heat map can show: the PromQL giving one value per node. */
const MEASURES = {
  cpu: { label: 'CPU load', unit: '%', query: 'avg by (node) (cpu_util)', min: 0, max: 100 },
  power: {
    label: 'Power',
    unit: 'W',
    query: 'sum by (node) (node_power) or sum by (node) (power_w)',
  },
  temperature: {
    label: 'Temperature',
    unit: '°C',
    // The hottest sensor of the node, whatever its collector calls it.
    query: 'max by (node) ({__name__=~".*temp.*"})',
  },
};

const REFRESH_MS = 5000;
/** Nodes are listed if they reported within this many seconds. */
const NODE_WINDOW_S = 900;

/** Low → high: blue, cyan, green, yellow, red. */
const SCALE = [
  [30, 64, 175],
  [14, 165, 233],
  [34, 197, 94],
  [234, 179, 8],
  [220, 38, 38],
];

function color(fraction) {
  const f = Math.min(Math.max(fraction, 0), 1) * (SCALE.length - 1);
  const i = Math.min(Math.floor(f), SCALE.length - 2);
  const t = f - i;
  const rgb = SCALE[i].map((c, k) => Math.round(c + (SCALE[i + 1][k] - c) * t));
  const light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 150;
  return { background: `rgb(${rgb.join(',')})`, text: light ? '#111827' : '#ffffff' };
}

/** Node names in natural order (node2 before node10). */
function naturalSort(names) {
  return [...names].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
}

export function renderOverview(main, params) {
  let measure = MEASURES[params.get('measure')] ? params.get('measure') : 'cpu';
  let latest = null;
  let busy = false;

  const buttons = Object.entries(MEASURES).map(([key, m]) =>
    el('button', { type: 'button', 'data-measure': key, onclick: () => select(key) }, m.label),
  );
  const summary = el('p', { class: 'summary' });
  const legend = el('div', { class: 'legend' });
  const grid = el('div', { class: 'heatmap', role: 'list' });
  const problem = el('div');
  main.append(
    el('h1', {}, 'Cluster overview'),
    el('div', { class: 'toolbar' }, el('div', { class: 'segmented' }, buttons), summary),
    problem,
    legend,
    grid,
  );

  function select(key) {
    measure = key;
    history.replaceState(null, '', `#/overview?measure=${key}`);
    draw();
  }

  function draw() {
    for (const b of buttons) b.classList.toggle('active', b.dataset.measure === measure);
    if (!latest) return;
    const m = MEASURES[measure];
    const values = latest.values[measure];
    const present = [...values.values()];
    const min = m.min ?? Math.min(...present);
    let max = m.max ?? Math.max(...present);
    if (!(max > min)) max = min + 1;
    legend.replaceChildren(
      el('span', {}, present.length ? `${formatNumber(min)} ${m.unit}` : ''),
      el('span', { class: 'gradient' }),
      el('span', {}, present.length ? `${formatNumber(max)} ${m.unit}` : ''),
    );
    grid.replaceChildren(
      ...latest.nodes.map((node) => {
        const value = values.get(node);
        const others = Object.entries(MEASURES)
          .filter(([key]) => key !== measure)
          .map(([key, o]) => `${o.label} ${formatNumber(latest.values[key].get(node))} ${o.unit}`);
        const style = value === undefined ? {} : color((value - min) / (max - min));
        return el(
          'a',
          {
            class: value === undefined ? 'cell missing' : 'cell',
            role: 'listitem',
            href: `#/node/${encodeURIComponent(node)}`,
            'data-node': node,
            title: `${node}\n${m.label} ${formatNumber(value)} ${m.unit}\n${others.join('\n')}`,
            style:
              value === undefined
                ? undefined
                : `background:${style.background};color:${style.text}`,
          },
          el('span', { class: 'name' }, node),
          el(
            'span',
            { class: 'value' },
            value === undefined ? 'no data' : `${formatNumber(value)} ${m.unit}`,
          ),
        );
      }),
    );
    summary.textContent = [
      `${latest.nodes.length} nodes`,
      `${m.label.toLowerCase()}: ${describe(measure, present)}`,
      `updated ${latest.at.toLocaleTimeString()}`,
    ].join(' · ');
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const now = Date.now() / 1000;
      const keys = Object.keys(MEASURES);
      const [names, ...results] = await Promise.all([
        labelValues('node', now - NODE_WINDOW_S, now),
        ...keys.map((key) => instantQuery(MEASURES[key].query, now)),
      ]);
      const values = {};
      keys.forEach((key, i) => {
        values[key] = new Map(
          results[i].result
            .map((s) => [s.metric.node, Number(s.value[1])])
            .filter(([node, value]) => node !== undefined && Number.isFinite(value)),
        );
      });
      const nodes = new Set(names);
      for (const map of Object.values(values)) for (const node of map.keys()) nodes.add(node);
      latest = { nodes: naturalSort(nodes), values, at: new Date() };
      problem.replaceChildren();
      if (nodes.size === 0) problem.append(el('p', { class: 'note' }, 'No node has reported yet.'));
      draw();
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    } finally {
      busy = false;
    }
  }

  draw();
  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}

function describe(measure, values) {
  if (!values.length) return 'no data';
  const sum = values.reduce((a, b) => a + b, 0);
  const { unit } = MEASURES[measure];
  if (measure === 'power') return `total ${formatNumber(sum)} ${unit}`;
  if (measure === 'temperature') return `hottest ${formatNumber(Math.max(...values))} ${unit}`;
  return `mean ${formatNumber(sum / values.length)} ${unit}`;
}
