// Small helpers the pages share: building elements, formatting, time ranges, errors.

/** Creates an element: `el('a', {href: '#/'}, 'text', child)`. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : value);
  }
  node.append(...children.flat().filter((c) => c !== undefined && c !== null));
  return node;
}

/** The header row of a `rows` table: one cell per name. */
export function tableHead(names) {
  return el('thead', {}, el('tr', {}, names.map((name) => el('th', {}, name))));
}

/** A number for people: 3 significant digits, SI prefixes above 10 000. */
export function formatNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  const abs = Math.abs(value);
  if (abs >= 1e4) {
    const units = ['k', 'M', 'G', 'T', 'P'];
    let scaled = value;
    let unit = -1;
    while (Math.abs(scaled) >= 1000 && unit < units.length - 1) {
      scaled /= 1000;
      unit += 1;
    }
    return `${scaled.toPrecision(3)}${units[unit]}`;
  }
  if (abs === 0 || abs >= 100) return value.toFixed(0);
  return value.toPrecision(3).replace(/\.?0+$/, '');
}

/** Bytes with binary prefixes. */
export function formatBytes(bytes) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** Local date and time of Unix seconds. */
export function formatTime(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

/** `{a="1", b="2"}` of a label set, without `__name__`. */
export function formatLabels(metric, skip = []) {
  const pairs = Object.entries(metric)
    .filter(([name]) => name !== '__name__' && !skip.includes(name))
    .map(([name, value]) => `${name}="${value}"`);
  return pairs.length ? `{${pairs.join(', ')}}` : '';
}

/** A PromQL string literal. */
export function promString(text) {
  return JSON.stringify(text);
}

/** Time ranges the pages offer, in seconds. */
export const RANGES = [
  ['5m', 300],
  ['15m', 900],
  ['1h', 3600],
  ['6h', 21600],
  ['24h', 86400],
  ['7d', 604800],
];

/** A `<select>` of RANGES with `selected` chosen. */
export function rangeSelect(selected, onchange) {
  return el(
    'select',
    { 'aria-label': 'Time range', onchange },
    RANGES.map(([name]) => el('option', { value: name, selected: name === selected }, name)),
  );
}

/** The RANGES name in `params.get(key)`, or `fallback` if absent or unknown. */
export function rangeParam(params, fallback, key = 'range') {
  const name = params.get(key);
  return RANGES.some(([n]) => n === name) ? name : fallback;
}

/** Seconds of a RANGES name (1h if unknown). */
export function rangeSeconds(name) {
  return (RANGES.find(([n]) => n === name) || RANGES[2])[1];
}

/** A step giving about 240 points over `seconds`, at least 1 s. */
export function stepFor(seconds) {
  return Math.max(1, Math.ceil(seconds / 240));
}

/** An error box with the server's message. */
export function errorBox(error) {
  const status = error.status ? `HTTP ${error.status}: ` : '';
  return el('pre', { class: 'error', role: 'alert' }, `${status}${error.message}`);
}
