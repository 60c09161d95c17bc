// Query page: PromQL (drawn as a chart over the chosen range) or SQL (a table, downloadable as
// CSV), with a history of past queries in localStorage. Errors are shown as the API words them.

import { rangeQuery, sql } from './api.js';
import { drawChart } from './chart.js';
import { el, errorBox, rangeParam, rangeSeconds, rangeSelect, stepFor, tableHead } from './ui.js';

const HISTORY_KEY = 'exawatch.history';
const HISTORY_SIZE = 30;
/** Rows drawn in the table; the CSV has them all. */
const TABLE_ROWS = 1000;
const EXAMPLES = {
  promql: 'avg by (node) (cpu_util)',
  sql: `SELECT node, avg(value) AS watts FROM samples
WHERE metric = 'node_power' AND time > now() - interval '5 minutes'
GROUP BY node ORDER BY watts DESC`,
};

function loadHistory() {
  try {
    const items = JSON.parse(localStorage.getItem(HISTORY_KEY) || '[]');
    return Array.isArray(items) ? items : [];
  } catch {
    return [];
  }
}

function remember(lang, q) {
  const items = loadHistory().filter((h) => h.lang !== lang || h.q !== q);
  items.unshift({ lang, q });
  localStorage.setItem(HISTORY_KEY, JSON.stringify(items.slice(0, HISTORY_SIZE)));
}

/** RFC 4180 CSV of rows, columns in the given order. */
function toCsv(columns, rows) {
  const cell = (v) => {
    if (v === null || v === undefined) return '';
    const text = typeof v === 'object' ? JSON.stringify(v) : String(v);
    return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
  };
  return [columns, ...rows.map((r) => columns.map((c) => r[c]))]
    .map((line) => line.map(cell).join(','))
    .join('\r\n');
}

export function renderQuery(main, params) {
  let lang = params.get('lang') === 'sql' ? 'sql' : 'promql';
  let range = rangeParam(params, '1h');
  let generation = 0;

  const editor = el('textarea', {
    class: 'editor',
    spellcheck: 'false',
    rows: 5,
    'aria-label': 'Query',
    onkeydown: (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        run();
      }
    },
  });
  editor.value = params.get('q') || '';
  const langButtons = ['promql', 'sql'].map((key) =>
    el(
      'button',
      { type: 'button', 'data-lang': key, onclick: () => setLang(key) },
      key === 'promql' ? 'PromQL' : 'SQL',
    ),
  );
  const ranges = rangeSelect(range, (e) => {
    range = e.target.value;
    if (editor.value.trim()) run();
  });
  const result = el('div', { class: 'result' });
  const historyList = el('ol', { class: 'history' });
  main.append(
    el('h1', {}, 'Query'),
    el('div', { class: 'toolbar' }, el('div', { class: 'segmented' }, langButtons), ranges),
    editor,
    el(
      'div',
      { class: 'toolbar' },
      el('button', { type: 'button', class: 'primary', onclick: () => run() }, 'Run'),
      el('span', { class: 'hint' }, 'Ctrl+Enter runs the query'),
    ),
    result,
    el('details', { open: true }, el('summary', {}, 'History'), historyList),
  );

  function setLang(key) {
    lang = key;
    for (const b of langButtons) b.classList.toggle('active', b.dataset.lang === lang);
    ranges.hidden = lang !== 'promql';
    editor.placeholder = EXAMPLES[lang];
  }

  function showHistory() {
    historyList.replaceChildren(
      ...loadHistory().map((h) =>
        el(
          'li',
          {},
          el(
            'button',
            {
              type: 'button',
              class: 'link',
              onclick: () => {
                setLang(h.lang);
                editor.value = h.q;
                run();
              },
            },
            el('span', { class: 'tag' }, h.lang === 'sql' ? 'SQL' : 'PromQL'),
            h.q,
          ),
        ),
      ),
    );
  }

  async function run() {
    const q = editor.value.trim();
    if (!q) {
      editor.value = EXAMPLES[lang];
      return run();
    }
    const mine = ++generation;
    const state = new URLSearchParams({ lang, q });
    if (lang === 'promql') state.set('range', range);
    history.replaceState(null, '', `#/query?${state}`);
    remember(lang, q);
    showHistory();
    result.replaceChildren(el('p', { class: 'note' }, 'Running…'));
    const started = performance.now();
    try {
      const answer = lang === 'promql' ? await runPromql(q) : await runSql(q);
      if (mine !== generation) return;
      const ms = Math.round(performance.now() - started);
      result.replaceChildren(
        el('p', { class: 'note' }, `${answer.summary} · ${ms} ms`),
        ...answer.parts.filter(Boolean),
      );
      answer.draw?.();
    } catch (error) {
      if (mine === generation) result.replaceChildren(errorBox(error));
    }
  }

  async function runPromql(q) {
    const seconds = rangeSeconds(range);
    const end = Date.now() / 1000;
    const step = stepFor(seconds);
    const data = await rangeQuery(q, end - seconds, end, step);
    const chart = el('div', { class: 'chart', 'data-role': 'result-chart' });
    return {
      summary: `${data.result.length} series, step ${step} s`,
      parts: [el('div', { class: 'card' }, chart)],
      // The chart takes the width it has, so it is drawn once it is in the page.
      draw: () => drawChart(chart, data.result, { height: 320, range: [end - seconds, end] }),
    };
  }

  async function runSql(q) {
    const rows = await sql(q);
    const columns = rows.length ? Object.keys(rows[0]) : [];
    const download = el(
      'button',
      {
        type: 'button',
        onclick: () => {
          const blob = new Blob([toCsv(columns, rows)], { type: 'text/csv' });
          const link = el('a', { href: URL.createObjectURL(blob), download: 'exawatch.csv' });
          link.click();
          setTimeout(() => URL.revokeObjectURL(link.href), 1000);
        },
      },
      'Download CSV',
    );
    const shown = rows.slice(0, TABLE_ROWS);
    const table = el(
      'table',
      { class: 'rows' },
      tableHead(columns),
      el(
        'tbody',
        {},
        shown.map((r) =>
          el(
            'tr',
            {},
            columns.map((c) => el('td', {}, r[c] === null ? '' : String(r[c]))),
          ),
        ),
      ),
    );
    const more =
      rows.length > shown.length
        ? el(
            'p',
            { class: 'note' },
            `First ${shown.length} of ${rows.length} rows shown; the CSV has all.`,
          )
        : null;
    return {
      summary: `${rows.length} rows`,
      parts: [
        el('div', { class: 'toolbar' }, download),
        el('div', { class: 'table-wrap' }, table),
        more,
      ],
    };
  }

  setLang(lang);
  showHistory();
  if (editor.value) run();
}
