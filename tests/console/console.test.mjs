// Drives the web console in Debian's Chromium (headless, through playwright-core) against a
// running `exawatch up --simulate 16`, and writes a screenshot of each page.
//
//   node tests/console/console.test.mjs <server url> <screenshot dir>
//
// Started by tests/console.rs. Exits 0 when every check passes; otherwise prints the failed
// check and exits 1 (a failure.png shows the page at that moment).

import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, shots] = process.argv.slice(2);
if (!url || !shots) {
  console.error('usage: node console.test.mjs <server url> <screenshot dir>');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const NODES = 16;
const origin = new URL(url).origin;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  // As root in a container, and no network beyond loopback: see .library/env/machines/rust.md.
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const context = await browser.newContext({
  viewport: { width: 1400, height: 900 },
  acceptDownloads: true,
});
const page = await context.newPage();
page.setDefaultTimeout(15000);

// The console must work offline: anything not from the server is refused and reported.
const external = [];
// A request a page-level route (below) already answered may still reach this handler: Playwright
// then refuses a second answer ("Route is already handled"), which is not a failure.
const ignoreHandled = (error) => {
  if (!String(error).includes('already handled')) throw error;
};
await context.route('**/*', (route) => {
  if (route.request().url().startsWith(origin)) return route.continue().catch(ignoreHandled);
  external.push(route.request().url());
  return route.abort().catch(ignoreHandled);
});
// Script errors fail the test, and so does a missing page file; failed API requests are
// expected (bad queries, absent analytics endpoints).
const scriptErrors = [];
page.on('response', (response) => {
  const { pathname } = new URL(response.url());
  if (response.status() >= 400 && !pathname.startsWith('/api/')) {
    scriptErrors.push(`${response.status()} for ${response.url()}`);
  }
});
page.on('pageerror', (error) => scriptErrors.push(error.message));
page.on('console', (message) => {
  if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
    scriptErrors.push(message.text());
  }
});

let failures = 0;
async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    if (scriptErrors.length) throw new Error(`script errors: ${scriptErrors.join('; ')}`);
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failures += 1;
    console.log(`not ok - ${name}: ${error.message}`);
    await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
    await finish();
  }
}

async function shot(name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/** Pixels of a chart canvas drawn in colour (series lines; axes and grid are grey). */
async function colouredPixels(selector) {
  return page.$eval(`${selector} canvas`, (canvas) => {
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 60) n += 1;
    }
    return n;
  });
}

async function finish() {
  await browser.close();
  console.log(`screenshots in ${shots}`);
  process.exit(failures ? 1 : 0);
}

await check(`the overview shows ${NODES} nodes with their CPU load`, async () => {
  await page.goto(`${url}/`);
  await page.waitForFunction(
    (n) => document.querySelectorAll('.heatmap .cell:not(.missing)').length === n,
    NODES,
  );
  const cells = await page.$$eval('.heatmap .cell', (cs) => cs.map((c) => c.dataset.node));
  expect(cells.length === NODES, `${cells.length} cells: ${cells}`);
  expect(cells[0] === 'node000' && cells[NODES - 1] === 'node015', `order: ${cells}`);
  const value = await page.textContent('.heatmap .cell .value');
  expect(/^[\d.]+ %$/.test(value), `CPU cell shows ${value}`);
  await shot('overview');
});

await check('the overview switches to power and updates live', async () => {
  await page.click('button[data-measure="power"]');
  await page.waitForFunction(() =>
    [...document.querySelectorAll('.heatmap .cell .value')].every((v) => / W$/.test(v.textContent)),
  );
  const before = await page.textContent('.summary');
  await page.waitForFunction(
    (text) => document.querySelector('.summary').textContent !== text,
    before,
  );
  expect(page.url().endsWith('#/overview?measure=power'), page.url());
  await shot('overview-power');
});

await check('a node page draws its metrics as charts with data', async () => {
  await page.click('.heatmap .cell[data-node="node003"]');
  await page.waitForURL(/#\/node\/node003/);
  await page.selectOption('select[aria-label="Time range"]', '5m');
  await page.waitForURL(/range=5m/);
  await page.waitForFunction(() => {
    const charts = [...document.querySelectorAll('.chart[data-metric]')];
    return charts.length > 20 && charts.every((c) => c.dataset.points !== undefined);
  });
  const charts = await page.$$eval('.chart[data-metric]', (cs) =>
    cs.map((c) => [c.dataset.metric, Number(c.dataset.points)]),
  );
  const empty = charts.filter(([, points]) => points === 0);
  expect(empty.length === 0, `charts without data: ${empty.map(([m]) => m)}`);
  const headings = await page.$$eval('.charts h2', (hs) => hs.map((h) => h.textContent));
  expect(headings.join() === 'ipmi,nvml,procfs,rapl', `plugins: ${headings}`);
  const pixels = await colouredPixels('.chart[data-metric="node_power"]');
  expect(pixels > 100, `node_power chart has ${pixels} coloured pixels`);
  const rateTitle = await page.textContent('.card:has(.chart[data-metric="rx_bytes"]) h3');
  expect(rateTitle === 'rx_bytes (per second)', `counter title: ${rateTitle}`);
  await shot('node');
});

await check('a PromQL query draws a chart', async () => {
  await page.goto(`${url}/#/query`);
  await page.click('button[data-lang="promql"]');
  await page.fill('textarea.editor', 'avg by (node) (cpu_util)');
  await page.selectOption('select[aria-label="Time range"]', '5m');
  await page.click('button:has-text("Run")');
  await page.waitForSelector('[data-role="result-chart"][data-points]');
  const points = Number(await page.getAttribute('[data-role="result-chart"]', 'data-points'));
  expect(points > NODES, `${points} points`);
  const note = await page.textContent('.result .note');
  expect(note.startsWith(`${NODES} series`), note);
  const pixels = await colouredPixels('[data-role="result-chart"]');
  expect(pixels > 100, `${pixels} coloured pixels`);
  const legend = await page.$$eval('.u-legend .u-series', (s) => s.length);
  expect(legend === NODES + 1, `legend rows: ${legend}`);
  await shot('query-promql');
});

await check('an SQL query fills a table and downloads as CSV', async () => {
  await page.click('button[data-lang="sql"]');
  await page.fill(
    'textarea.editor',
    'SELECT node, count(*) AS samples, avg(value) AS cpu FROM samples ' +
      "WHERE metric = 'cpu_util' GROUP BY node ORDER BY node",
  );
  await page.keyboard.press('Control+Enter');
  await page.waitForSelector('table.rows tbody tr');
  const rows = await page.$$eval('table.rows tbody tr', (trs) =>
    trs.map((tr) => [...tr.children].map((td) => td.textContent)),
  );
  const header = await page.$$eval('table.rows th', (ths) => ths.map((th) => th.textContent));
  expect(header.join() === 'node,samples,cpu', `header ${header}`);
  expect(
    rows.length === NODES && rows[0][0] === 'node000',
    `rows: ${JSON.stringify(rows.slice(0, 3))}`,
  );
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.click('button:has-text("Download CSV")'),
  ]);
  const csv = readFileSync(await download.path(), 'utf8').split('\r\n');
  expect(csv[0] === 'node,samples,cpu' && csv.length === NODES + 1, `CSV: ${csv.slice(0, 2)}`);
  expect(csv[1].startsWith(`node000,${rows[0][1]},`), `CSV row ${csv[1]} vs table ${rows[0]}`);
  await shot('query-sql');
});

await check('bad queries show the error as the API returns it', async () => {
  await page.fill('textarea.editor', 'SELEC node FROM samples');
  await page.click('button:has-text("Run")');
  const sqlError = await (await page.waitForSelector('.result .error')).textContent();
  expect(
    sqlError.startsWith('HTTP 400: SQL error: ParserError') && sqlError.includes('SELEC'),
    sqlError,
  );
  await page.click('button[data-lang="promql"]');
  await page.fill('textarea.editor', 'sum(rate(cpu_util[5m])');
  await page.click('button:has-text("Run")');
  await page.waitForFunction(() =>
    document.querySelector('.result .error')?.textContent.includes('bad_data'),
  );
  const promError = await page.textContent('.result .error');
  expect(promError === 'HTTP 400: bad_data: unclosed left parenthesis', promError);
  await shot('query-error');
});

await check('the query history survives a reload', async () => {
  await page.reload();
  const items = await page.$$eval('.history li', (lis) => lis.map((li) => li.textContent));
  expect(items[0] === 'PromQLsum(rate(cpu_util[5m])', `first: ${items[0]}`);
  expect(
    items.some((i) => i.startsWith('SQLSELECT node, count(*)')),
    `items: ${items}`,
  );
  expect(
    items.some((i) => i === 'PromQLavg by (node) (cpu_util)'),
    `items: ${items}`,
  );
});

await check('the anomalies page degrades gracefully on this server', async () => {
  await page.goto(`${url}/#/anomalies`);
  // Either a note (no analytics: 404, or not running: 503) or the lists; never an error box.
  for (const role of ['anomalies', 'reports']) {
    await page.waitForFunction(
      (r) => !document.querySelector(`[data-role="${r}"]`).textContent.includes('Loading'),
      role,
    );
  }
  const errors = await page.$$('main .error');
  expect(errors.length === 0, await page.textContent('main'));
  await shot('anomalies');
});

await check('anomalies and reports are listed and linked when the API has them', async () => {
  const seconds = Math.floor(Date.now() / 1000) - 120;
  const endpoint = (p) => (u) => u.pathname === p;
  await page.route(endpoint('/api/v1/anomalies'), (route) =>
    route.fulfill({
      json: [
        {
          time_ns: seconds * 1e9,
          time: new Date(seconds * 1000).toISOString(),
          model: 'node-pca',
          node: 'node005',
          score: 12.5,
          threshold: 4.2,
          top_metrics: [
            ['cpu0_temp', 0.61],
            ['fan1', 0.22],
          ],
        },
      ],
    }),
  );
  await page.route(endpoint('/api/v1/reports'), (route) =>
    route.fulfill({
      json: [
        {
          id: '20261101T000000Z_20261102T000000Z',
          from_ns: (seconds - 86400) * 1e9,
          to_ns: seconds * 1e9,
          created_ns: seconds * 1e9,
          anomalies: 1,
          nodes: 1,
          url: '/reports/20261101T000000Z_20261102T000000Z.html',
        },
      ],
    }),
  );
  await page.route(
    (u) => u.pathname.startsWith('/reports/'),
    (route) =>
      route.fulfill({
        contentType: 'text/html',
        body: '<h1>Anomaly report</h1><p>node005: cpu0_temp</p>',
      }),
  );
  await page.reload();
  const row = await (await page.waitForSelector('[data-role="anomalies"] tbody tr')).textContent();
  expect(row.includes('node005') && row.includes('node-pca') && row.includes('cpu0_temp 61%'), row);
  await page.click('[data-role="reports"] button:has-text("Open")');
  const frame = await (await page.waitForSelector('.report-viewer iframe')).contentFrame();
  await frame.waitForSelector('text=Anomaly report');
  await shot('anomalies-listed');
  await page.click('[data-role="anomalies"] a:has-text("node005")');
  await page.waitForURL(new RegExp(`#/node/node005\\?range=1h&at=${seconds}`));
  await page.waitForSelector('.pin');
  await page.waitForSelector('.chart[data-metric="node_power"][data-points]');
  await page.unrouteAll();
});

await check(
  'the status page shows ingest rate, series, disk use, WAL lag and collectors',
  async () => {
    await page.goto(`${url}/#/status`);
    // The rate needs two readings of /metrics, 5 s apart.
    await page.waitForFunction(
      () => /samples\/s$/.test(document.querySelector('[data-stat="ingest"] .value')?.textContent),
      null,
      { timeout: 15000 },
    );
    const stats = Object.fromEntries(
      await page.$$eval('.stat', (ss) =>
        ss.map((s) => [s.dataset.stat, s.querySelector('.value').textContent]),
      ),
    );
    expect(Number(stats.series) === NODES * 50, `series: ${stats.series}`);
    expect(/ (B|KiB|MiB|GiB)$/.test(stats.disk), `disk: ${stats.disk}`);
    expect(/ rows$/.test(stats['wal-lag']), `WAL lag: ${stats['wal-lag']}`);
    const rate = parseFloat(stats.ingest);
    expect(rate > 0, `ingest: ${stats.ingest}`);
    const collectors = await page.$$eval('[data-role="collectors"] tbody tr', (trs) =>
      trs.map((tr) => [tr.children[0].textContent, tr.children[1].textContent]),
    );
    expect(
      JSON.stringify(collectors) ===
        JSON.stringify(['ipmi', 'nvml', 'procfs', 'rapl'].map((p) => [p, String(NODES)])),
      `collectors: ${JSON.stringify(collectors)}`,
    );
    await shot('status');
  },
);

await check('a 401 asks for credentials, which are then sent with every request', async () => {
  const seen = [];
  await page.route('**/api/v1/query', (route) => {
    const auth = route.request().headers().authorization;
    seen.push(auth);
    if (auth === 'Bearer s3cret') return route.continue();
    // As the server's auth layer answers (api/src/auth.rs on main).
    return route.fulfill({
      status: 401,
      headers: { 'WWW-Authenticate': 'Basic realm="exawatch"' },
      json: { error: 'authentication required: a bearer token or basic auth' },
    });
  });
  await page.goto(`${url}/#/overview`);
  await page.waitForSelector('dialog#login[open]');
  const reason = await page.textContent('#login-reason');
  expect(reason.includes('authentication required: a bearer token or basic auth'), reason);
  await shot('login');
  await page.fill('input[name="token"]', 's3cret');
  await page.click('dialog button[type="submit"]');
  await page.waitForFunction(
    (n) => document.querySelectorAll('.heatmap .cell:not(.missing)').length === n,
    NODES,
  );
  expect(seen.at(-1) === 'Bearer s3cret', `last Authorization: ${seen.at(-1)}`);
  expect(await page.isVisible('#sign-out'), 'no sign-out button');
  // Basic auth: user and password, base64 of UTF-8.
  await page.click('#sign-out');
  await page.waitForSelector('dialog#login[open]');
  await page.check('input[value="basic"]');
  await page.fill('input[name="user"]', 'admin');
  await page.fill('input[name="password"]', 'pässword');
  await page.click('dialog button[type="submit"]');
  await page.waitForFunction(() => document.querySelector('dialog#login[open]'));
  const expected = `Basic ${Buffer.from('admin:pässword').toString('base64')}`;
  expect(seen.at(-1) === expected, `Authorization ${seen.at(-1)}, want ${expected}`);
  await page.unrouteAll();
});

await check('a report opens in a new tab with the login, sandboxed', async () => {
  const seconds = Math.floor(Date.now() / 1000);
  await page.evaluate(() => sessionStorage.setItem('exawatch.authorization', 'Bearer s3cret'));
  await page.route(
    (u) => u.pathname === '/api/v1/reports',
    (route) =>
      route.fulfill({
        json: [
          {
            id: 'r1',
            from_ns: (seconds - 3600) * 1e9,
            to_ns: seconds * 1e9,
            created_ns: seconds * 1e9,
            anomalies: 1,
            nodes: 1,
            url: '/reports/r1.html',
          },
        ],
      }),
  );
  const sent = [];
  await page.route(
    (u) => u.pathname.startsWith('/reports/'),
    (route) => {
      const auth = route.request().headers().authorization;
      sent.push(auth);
      if (auth !== 'Bearer s3cret') {
        return route.fulfill({ status: 401, json: { error: 'authentication required' } });
      }
      return route.fulfill({ contentType: 'text/html', body: '<h1>Anomaly report r1</h1>' });
    },
  );
  // A reload: the login dialog the last check left open goes, the stored login stays.
  await page.goto(`${url}/#/anomalies`);
  await page.reload();
  const link = await page.waitForSelector('[data-role="reports"] a:has-text("new tab")');
  const [tab] = await Promise.all([context.waitForEvent('page'), link.click()]);
  const frame = await (await tab.waitForSelector('iframe[sandbox]')).contentFrame();
  await frame.waitForSelector('text=Anomaly report r1');
  expect(sent.at(-1) === 'Bearer s3cret', `Authorization sent: ${sent}`);
  await tab.close();
  await page.evaluate(() => sessionStorage.removeItem('exawatch.authorization'));
  await page.unrouteAll();
});

await check('nothing was fetched from outside the server', async () => {
  expect(external.length === 0, `external requests: ${external}`);
});

await finish();
