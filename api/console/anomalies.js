// Anomalies page: the latest anomaly events (score, node, top metrics; each linked to the
// node's page at that time) and the list of reports, each opened in the page. Both come from
// the analytics endpoints; a server without them (404) or with analytics off says so.

import { anomalies, credentials, reportHtml, reports } from './api.js';
import {
  el,
  errorBox,
  formatNumber,
  formatTime,
  rangeParam,
  rangeSeconds,
  rangeSelect,
  tableHead,
} from './ui.js';

const LIMIT = 200;

/**
 * The message for a failed request: a server without analytics (404: not built in yet; 503:
 * analytics not running) gets a note, not an error.
 */
function unavailable(error, what, path) {
  const note = (text) => el('p', { class: 'note', 'data-role': 'unavailable' }, text);
  if (error.status === 404)
    return note(`${what} are not available on this server (${path} answered 404).`);
  if (error.status === 503) return note(`${what} are not available now: ${error.message}`);
  return errorBox(error);
}

function topMetrics(top) {
  if (!Array.isArray(top)) return String(top ?? '');
  return top.map(([name, share]) => `${name} ${Math.round(Number(share) * 100)}%`).join(', ');
}

export function renderAnomalies(main, params) {
  const range = rangeParam(params, '24h');
  const events = el('div', { 'data-role': 'anomalies' }, el('p', { class: 'note' }, 'Loading…'));
  const list = el('div', { 'data-role': 'reports' }, el('p', { class: 'note' }, 'Loading…'));
  const viewer = el('div', { class: 'report-viewer' });
  main.append(
    el('h1', {}, 'Anomalies'),
    el(
      'div',
      { class: 'toolbar' },
      rangeSelect(range, (e) => {
        location.hash = `#/anomalies?range=${e.target.value}`;
      }),
    ),
    events,
    el('h2', {}, 'Reports'),
    list,
    viewer,
  );

  const now = Date.now() / 1000;
  const from = Math.floor(now - rangeSeconds(range));
  anomalies({ from, limit: LIMIT }).then(
    (items) => events.replaceChildren(anomalyTable(items)),
    (error) => events.replaceChildren(unavailable(error, 'Anomalies', '/api/v1/anomalies')),
  );
  reports().then(
    (items) => list.replaceChildren(reportTable(items, viewer)),
    (error) => list.replaceChildren(unavailable(error, 'Reports', '/api/v1/reports')),
  );
}

function anomalyTable(items) {
  if (!items.length) return el('p', { class: 'note' }, 'No anomalies in this range.');
  return el(
    'table',
    { class: 'rows' },
    tableHead(['Time', 'Node', 'Model', 'Score', 'Threshold', 'Top metrics']),
    el(
      'tbody',
      {},
      items.map((a) => {
        const seconds = a.time_ns / 1e9;
        const link = `#/node/${encodeURIComponent(a.node)}?range=1h&at=${Math.round(seconds)}`;
        return el(
          'tr',
          {},
          el('td', {}, formatTime(seconds)),
          el('td', {}, el('a', { href: link }, a.node)),
          el('td', {}, a.model),
          el('td', { class: 'number' }, formatNumber(a.score)),
          el('td', { class: 'number' }, formatNumber(a.threshold)),
          el('td', {}, topMetrics(a.top_metrics)),
        );
      }),
    ),
  );
}

/**
 * With a login, a plain link would reach the server without it (the console sends it as a
 * header, which a link cannot carry): fetch the report with it and show it in the new tab,
 * sandboxed as in the page. Without a login the plain link is followed.
 */
async function openInNewTab(event, report, viewer) {
  if (!credentials()) return;
  event.preventDefault();
  // Opened within the click, so that pop-up blockers let it through.
  const tab = window.open('', '_blank');
  if (!tab) return;
  tab.opener = null;
  try {
    const html = await reportHtml(report.url);
    const escaped = html.replaceAll('&', '&amp;').replaceAll('"', '&quot;');
    const page =
      `<!doctype html><meta charset="utf-8"><title>Report ${report.id}</title>` +
      '<style>html,body,iframe{margin:0;border:0;width:100%;height:100%;display:block}</style>' +
      `<iframe sandbox srcdoc="${escaped}"></iframe>`;
    tab.location = URL.createObjectURL(new Blob([page], { type: 'text/html' }));
  } catch (error) {
    tab.close();
    viewer.replaceChildren(errorBox(error));
  }
}

function reportTable(items, viewer) {
  if (!items.length) return el('p', { class: 'note' }, 'No reports yet.');
  const open = async (report) => {
    viewer.replaceChildren(el('p', { class: 'note' }, 'Loading…'));
    try {
      const html = await reportHtml(report.url);
      // Sandboxed: the report is shown, not run.
      viewer.replaceChildren(
        el('h3', {}, `Report ${report.id}`),
        el('iframe', { sandbox: '', srcdoc: html, title: `Report ${report.id}` }),
      );
    } catch (error) {
      viewer.replaceChildren(errorBox(error));
    }
  };
  return el(
    'table',
    { class: 'rows' },
    tableHead(['Range', 'Anomalies', 'Nodes', 'Made', '']),
    el(
      'tbody',
      {},
      items.map((r) =>
        el(
          'tr',
          {},
          el('td', {}, `${formatTime(r.from_ns / 1e9)} – ${formatTime(r.to_ns / 1e9)}`),
          el('td', { class: 'number' }, String(r.anomalies)),
          el('td', { class: 'number' }, String(r.nodes)),
          el('td', {}, formatTime(r.created_ns / 1e9)),
          el(
            'td',
            {},
            el('button', { type: 'button', class: 'small', onclick: () => open(r) }, 'Open'),
            ' ',
            el(
              'a',
              {
                href: r.url,
                target: '_blank',
                rel: 'noopener',
                onclick: (event) => openInNewTab(event, r, viewer),
              },
              'new tab',
            ),
          ),
        ),
      ),
    ),
  );
}
