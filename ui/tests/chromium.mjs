// Shared by the layout and accessibility flows: the built UI (ui/dist) served on a loopback port
// with the production CSP as a response header, Debian's Chromium through playwright-core, and
// the Tauri IPC replaced by ipc-mock.js. Screens are reached through the navigation bar.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist');
/** Screenshots, kept as CI artifacts. */
export const shots = join(here, '..', '..', 'tests', 'output', 'ui');
const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.png': 'image/png' };

/** Every screen of the window, as named in its navigation bar. */
export const SCREENS = ['Session', 'Services', 'MCP servers', 'Clients', 'Activity', 'Connections', 'Hosts', 'Settings'];

/** The app's CSP (src-tauri/tauri.conf.json), so a library needing eval or inline scripts fails here. */
function csp() {
  const conf = JSON.parse(readFileSync(join(here, '..', '..', 'src-tauri', 'tauri.conf.json'), 'utf8'));
  return conf.app.security.csp;
}

/** Starts the static server and the browser; returns `{ open, base, browser, close }`. */
export async function start() {
  assert.ok(existsSync(join(dist, 'index.html')), 'ui/dist is built (npm run build)');
  mkdirSync(shots, { recursive: true });
  const policy = csp();
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    const file = join(dist, path === '/' ? 'index.html' : path);
    if (!file.startsWith(dist) || !existsSync(file)) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'content-security-policy': policy });
    res.end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });

  /** A fresh page at `width` px in `scheme`, logged in unless `loggedOut`; console errors and CSP violations are collected. */
  async function open({ width = 440, height = 700, scheme = 'light', loggedOut = false } = {}) {
    const context = await browser.newContext({ colorScheme: scheme, viewport: { width, height } });
    const page = await context.newPage();
    const errors = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.addInitScript({ path: join(here, 'ipc-mock.js') });
    await page.goto(base);
    if (!loggedOut) {
      await page.getByRole('button', { name: 'Log in' }).click();
      await page.getByTestId('user').waitFor();
    }
    return { page, context, errors };
  }

  return { open, base, browser, close: async () => { await browser.close(); server.close(); } };
}

/** Shows `screen` and waits for its heading and for the network of mocked calls to settle. */
export async function show(page, screen) {
  await page.getByRole('navigation').getByRole('button', { name: screen, exact: true }).click();
  await page.locator('main h1').first().waitFor();
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
}

/**
 * Everything that sticks out sideways: the document wider than the viewport, an element whose
 * box passes the viewport's right edge, or whose content is wider than its box (unless it is
 * elided on purpose: an ellipsis, with the whole text as its title).
 */
export function overflows(page) {
  return page.evaluate(() => {
    const out = [];
    const vw = document.documentElement.clientWidth;
    const name = (el) => `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className && typeof el.className === 'string' ? `.${el.className.trim().split(/\s+/).join('.')}` : ''} "${(el.textContent ?? '').trim().slice(0, 40)}"`;
    if (document.documentElement.scrollWidth > vw) out.push(`document is ${document.documentElement.scrollWidth}px wide in a ${vw}px viewport`);
    for (const el of document.body.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      if (r.right > vw + 0.5 || r.left < -0.5) out.push(`${name(el)} spans ${Math.round(r.left)}..${Math.round(r.right)} of ${vw}px`);
      const style = getComputedStyle(el);
      const elided = style.textOverflow === 'ellipsis' && style.overflowX === 'hidden' && el.title === el.textContent;
      if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1 && !elided) out.push(`${name(el)} holds ${el.scrollWidth}px in ${el.clientWidth}px`);
    }
    return out;
  });
}
