// Time-series charts (uPlot, loaded as the global `uPlot`) from Prometheus range results.

import { el, formatLabels, formatNumber } from './ui.js';

const PALETTE = [
  '#2563eb',
  '#dc2626',
  '#16a34a',
  '#d97706',
  '#7c3aed',
  '#0891b2',
  '#db2777',
  '#65a30d',
  '#ea580c',
  '#4f46e5',
  '#059669',
  '#b91c1c',
  '#0284c7',
  '#a21caf',
  '#ca8a04',
  '#475569',
];

/** Label names whose value is the same in every series: left out of the legend. */
function constantLabels(result) {
  if (result.length < 2) return [];
  const [first, ...rest] = result.map((s) => s.metric);
  return Object.keys(first).filter((name) => rest.every((m) => m[name] === first[name]));
}

function seriesName(metric, hidden, fallback) {
  const name = hidden.includes('__name__') ? '' : metric.__name__ || '';
  return `${name}${formatLabels(metric, hidden)}` || fallback;
}

/**
 * Draws a Prometheus matrix (`[{metric, values: [[t, "v"], …]}]`) into `container`.
 * Options: `range` ([start, end], Unix seconds) fixes the time axis; `marker` (Unix seconds)
 * draws a vertical line there; `hide` lists labels left out of the legend (besides those
 * equal in every series); `name` labels a series with no label left. Returns the uPlot
 * instance, or null (and a note) when there is nothing to draw. The container records the
 * number of points drawn in `data-points`.
 */
export function drawChart(container, result, options = {}) {
  container.replaceChildren();
  const times = [...new Set(result.flatMap((s) => s.values.map(([t]) => t)))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const columns = result.map((s) => {
    const column = new Array(times.length).fill(null);
    for (const [t, v] of s.values) {
      // NaN and ±Inf (Prometheus sends them as strings) cannot be drawn: gaps.
      const value = Number(v);
      column[index.get(t)] = Number.isFinite(value) ? value : null;
    }
    return column;
  });
  const points = columns.reduce((n, c) => n + c.filter((v) => v !== null).length, 0);
  container.dataset.points = String(points);
  if (points === 0) {
    container.append(el('p', { class: 'note' }, 'No data in this range.'));
    return null;
  }
  const hidden = [...constantLabels(result), ...(options.hide || [])];
  const [start, end] = options.range || [times[0], times[times.length - 1]];
  const width = Math.max(container.clientWidth, 300);
  const plot = new uPlot(
    {
      width,
      height: options.height || 220,
      cursor: { points: { size: 6 } },
      legend: { show: result.length <= 20 },
      scales: { x: { time: true, range: () => [start, end] } },
      axes: [{}, { size: 60, values: axisValues }],
      series: [
        {},
        ...result.map((s, i) => ({
          label: seriesName(s.metric, hidden, options.name || '{}'),
          stroke: PALETTE[i % PALETTE.length],
          width: 1.5,
          spanGaps: false,
          value: (_, v) => formatNumber(v),
        })),
      ],
      hooks: { draw: options.marker ? [(u) => drawMarker(u, options.marker)] : [] },
    },
    [times, ...columns],
    container,
  );
  new ResizeObserver(() => {
    if (container.clientWidth > 0)
      plot.setSize({ width: container.clientWidth, height: plot.height });
  }).observe(container);
  return plot;
}

/** Y tick labels: as many decimals as the tick spacing needs, SI prefixes from 10 000. */
function axisValues(_, ticks, __, ___, increment) {
  if (!(increment > 0)) return ticks.map(formatNumber);
  const largest = Math.max(...ticks.map(Math.abs));
  const power = largest >= 1e4 ? Math.min(Math.floor(Math.log10(largest) / 3), 5) : 0;
  const divisor = 1000 ** power;
  const step = increment / divisor;
  let decimals = 0;
  while (
    decimals < 6 &&
    Math.abs(step * 10 ** decimals - Math.round(step * 10 ** decimals)) > 1e-6
  ) {
    decimals += 1;
  }
  const prefix = ['', 'k', 'M', 'G', 'T', 'P'][power];
  return ticks.map((t) => `${(t / divisor).toFixed(decimals)}${prefix}`);
}

function drawMarker(u, seconds) {
  const x = u.valToPos(seconds, 'x', true);
  if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
  const { ctx } = u;
  ctx.save();
  ctx.strokeStyle = '#dc2626';
  ctx.setLineDash([4, 4]);
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(x, u.bbox.top);
  ctx.lineTo(x, u.bbox.top + u.bbox.height);
  ctx.stroke();
  ctx.restore();
}
