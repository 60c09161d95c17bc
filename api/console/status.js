// Status page: the server's own figures from /metrics (ingest rate, series, disk use, rows
// not yet in Parquet, problems), its version from /health, and the collectors seen recently
// (SQL over the samples).

import { health, serverMetrics, sql } from './api.js';
import { el, errorBox, formatBytes, formatNumber, formatTime, tableHead } from './ui.js';

const REFRESH_MS = 5000;
const COLLECTORS_SQL = `SELECT plugin, count(DISTINCT node) AS nodes, count(*) AS samples,
  max(time) AS last_seen
FROM samples WHERE time > now() - interval '5 minutes'
GROUP BY plugin ORDER BY plugin`;

/** Counters that should stay at zero: shown as problems when they are not. */
const PROBLEMS = [
  ['exawatch_messages_dropped_total', 'malformed messages dropped'],
  ['exawatch_samples_refused_total', 'samples refused (WAL write failed)'],
  ['exawatch_samples_shed_total', 'MQTT samples shed (memory full)'],
  ['exawatch_broker_messages_overrun_total', 'messages lost to broker backlog overrun'],
  ['exawatch_wal_write_errors_total', 'WAL write errors'],
  ['exawatch_flush_errors_total', 'failed flushes'],
];

/** Sum of the samples of `name` (all label sets). */
function total(samples, name) {
  return samples.filter((s) => s.name === name).reduce((sum, s) => sum + s.value, 0);
}

function stat(key, label, value, detail) {
  return el(
    'div',
    { class: 'stat', 'data-stat': key },
    el('span', { class: 'label' }, label),
    el('span', { class: 'value' }, value),
    el('span', { class: 'detail' }, detail),
  );
}

export function renderStatus(main) {
  const stats = el('div', { class: 'stats' });
  const problems = el('div', { 'data-role': 'problems' });
  const queries = el('div');
  const collectors = el('div', { 'data-role': 'collectors' });
  const version = el('p', { class: 'note' });
  main.append(
    el('h1', {}, 'Status'),
    version,
    stats,
    problems,
    el('h2', {}, 'Collectors seen in the last 5 minutes'),
    collectors,
    el('h2', {}, 'Queries answered'),
    queries,
  );

  let previous = null;
  let ticks = 0;

  async function refresh() {
    try {
      const [samples, info] = await Promise.all([serverMetrics(), health()]);
      const now = performance.now() / 1000;
      const figure = (name) => total(samples, name);
      const written = figure('exawatch_samples_written_total');
      const rate = previous ? (written - previous.written) / (now - previous.at) : null;
      previous = { written, at: now };
      const time = new Date().toLocaleTimeString();
      version.textContent = `exawatch ${info.version} · updated ${time}`;
      stats.replaceChildren(
        stat(
          'ingest',
          'Ingest rate',
          rate === null ? 'measuring…' : `${formatNumber(rate)} samples/s`,
          `${formatNumber(written)} samples since start`,
        ),
        stat('series', 'Series', formatNumber(figure('exawatch_series')), 'known since start'),
        stat(
          'disk',
          'Disk use',
          formatBytes(figure('exawatch_file_bytes')),
          `${formatNumber(figure('exawatch_files'))} Parquet files, ` +
            `${formatNumber(figure('exawatch_file_rows'))} rows; ` +
            `WAL written ${formatBytes(figure('exawatch_wal_written_bytes_total'))}`,
        ),
        stat(
          'wal-lag',
          'WAL lag',
          `${formatNumber(figure('exawatch_buffered_rows'))} rows`,
          'in the WAL and memory, not yet in Parquet; ' +
            `${formatNumber(figure('exawatch_flushes_total'))} flushes so far`,
        ),
      );
      const bad = PROBLEMS.map(([name, what]) => [total(samples, name), what]).filter(
        ([n]) => n > 0,
      );
      problems.replaceChildren(
        bad.length
          ? el(
              'ul',
              { class: 'problems' },
              bad.map(([n, what]) => el('li', {}, `${formatNumber(n)} ${what}`)),
            )
          : el('p', { class: 'ok' }, 'No dropped, refused or lost samples.'),
      );
      queries.replaceChildren(queryTable(samples));
      if (ticks % 3 === 0) refreshCollectors();
      ticks += 1;
    } catch (error) {
      stats.replaceChildren(errorBox(error));
    }
  }

  async function refreshCollectors() {
    try {
      const rows = await sql(COLLECTORS_SQL);
      collectors.replaceChildren(
        rows.length
          ? el(
              'table',
              { class: 'rows' },
              tableHead(['Plugin', 'Nodes', 'Samples', 'Last seen']),
              el(
                'tbody',
                {},
                rows.map((r) =>
                  el(
                    'tr',
                    {},
                    el('td', {}, r.plugin ?? '(none)'),
                    el('td', { class: 'number' }, String(r.nodes)),
                    el('td', { class: 'number' }, formatNumber(r.samples)),
                    el('td', {}, formatTime(Date.parse(r.last_seen) / 1000)),
                  ),
                ),
              ),
            )
          : el('p', { class: 'note' }, 'Nothing received in the last 5 minutes.'),
      );
    } catch (error) {
      collectors.replaceChildren(errorBox(error));
    }
  }

  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}

function queryTable(samples) {
  const rows = samples.filter((s) => s.name === 'exawatch_queries_total' && s.value > 0);
  if (!rows.length) return el('p', { class: 'note' }, 'None yet.');
  return el(
    'table',
    { class: 'rows' },
    tableHead(['API', 'Outcome', 'Count']),
    el(
      'tbody',
      {},
      rows.map((s) =>
        el(
          'tr',
          {},
          el('td', {}, s.labels.api),
          el('td', {}, s.labels.status),
          el('td', { class: 'number' }, formatNumber(s.value)),
        ),
      ),
    ),
  );
}
