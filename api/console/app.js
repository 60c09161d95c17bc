// The console's shell: hash routes (#/overview, #/node/<name>, #/query, #/anomalies,
// #/status), the navigation bar and the login form.
//
// A page is a function `render(main, params, path)` that fills `main` and returns a function
// that stops its timers; the shell calls it when the user leaves the page.

import { authorization, credentials, onUnauthorized, setCredentials } from './api.js';
import { renderOverview } from './overview.js';
import { renderNode } from './node.js';
import { renderQuery } from './query.js';
import { renderAnomalies } from './anomalies.js';
import { renderStatus } from './status.js';

const PAGES = {
  overview: renderOverview,
  node: renderNode,
  query: renderQuery,
  anomalies: renderAnomalies,
  status: renderStatus,
};

const main = document.getElementById('page');
const login = document.getElementById('login');
const signOut = document.getElementById('sign-out');
let leave = () => {};

/** `#/node/node003?range=1h` → {page: 'node', path: ['node003'], params}. */
function parseHash() {
  const [route, query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const [page, ...path] = route.split('/').map(decodeURIComponent);
  return { page: PAGES[page] ? page : 'overview', path, params: new URLSearchParams(query) };
}

function show() {
  leave();
  const { page, path, params } = parseHash();
  for (const link of document.querySelectorAll('nav a')) {
    link.classList.toggle('active', link.dataset.page === page);
  }
  signOut.hidden = !credentials();
  main.replaceChildren();
  main.dataset.page = page;
  leave = PAGES[page](main, params, path) || (() => {});
}

function askForCredentials(reason) {
  if (login.open) return;
  document.getElementById('login-reason').textContent =
    `The server asks for credentials: ${reason}`;
  login.showModal();
}

function showScheme() {
  const scheme = login.querySelector('input[name="scheme"]:checked').value;
  for (const part of login.querySelectorAll('[data-scheme]')) {
    part.hidden = part.dataset.scheme !== scheme;
  }
}

login.addEventListener('change', showScheme);
login.querySelector('form').addEventListener('submit', () => {
  const form = new FormData(login.querySelector('form'));
  setCredentials(
    authorization(form.get('scheme'), form.get('token'), form.get('user'), form.get('password')),
  );
  login.querySelector('form').reset();
  showScheme();
  show();
});
signOut.addEventListener('click', () => {
  setCredentials(null);
  show();
});

onUnauthorized(askForCredentials);
window.addEventListener('hashchange', show);
show();
