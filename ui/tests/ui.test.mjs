// The built UI (ui/dist) in Debian's Chromium, driven by playwright-core, with the Tauri IPC
// replaced by ipc-mock.js: log in and out, the countdown moves, a client's token is shown once and
// copied, activity filters, a host entry is previewed, added and undone. Screenshots of each screen
// (light and dark) go to tests/output/ui/ at the repository root.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { shots, start } from './chromium.mjs';

const here = dirname(fileURLToPath(import.meta.url));

// The built UI served with the app's CSP, and Chromium (shared with the layout and a11y flows).
let stack;
let browser;
let base;

before(async () => {
  stack = await start();
  ({ browser, base } = stack);
});

after(async () => {
  await stack?.close();
});

// `init`, when given, is one more init script ({ fn, arg }) run after the IPC mock.
async function open(scheme = 'light', init = null) {
  const context = await browser.newContext({ colorScheme: scheme, viewport: { width: 440, height: 700 } });
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.addInitScript({ path: join(here, 'ipc-mock.js') });
  if (init) await page.addInitScript(init.fn, init.arg);
  await page.goto(base);
  return { page, context, errors };
}

const nav = (page, name) => page.getByRole('navigation').getByRole('button', { name, exact: true }).click();

test('log in, see the user and a moving countdown, log out', async () => {
  const { page, context, errors } = await open();
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('user').waitFor();
  assert.match(await page.getByTestId('user').innerText(), /Alice Example · alice@example\.test/);
  assert.equal(await page.getByTestId('session-badge').innerText(), 'Active');
  const first = await page.getByTestId('countdown').innerText();
  await page.waitForFunction((t) => document.querySelector('[data-testid=countdown]')?.textContent !== t, first, { timeout: 5000 });
  const second = await page.getByTestId('countdown').innerText();
  assert.notEqual(first, second, 'the countdown moves');
  assert.match(second, /^(59|60) min \d+ s$/);
  await page.screenshot({ path: join(shots, 'session-light.png') });
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByRole('button', { name: 'Log in' }).waitFor();
  assert.equal(await page.getByTestId('session-badge').innerText(), 'Signed out');
  assert.deepEqual(errors, []);
  await context.close();
});

test('the session screen in the dark theme', async () => {
  const { page, context } = await open('dark');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('countdown').waitFor();
  const bg = await page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--bg').trim());
  assert.equal(bg, '#17191c', 'dark palette applied');
  await page.screenshot({ path: join(shots, 'session-dark.png') });
  await context.close();
});

test('a refused login shows its reason and fix in the Session section, and goes away on the next login', async () => {
  const { page, context, errors } = await open();
  const message = 'the identity provider refuses the redirect URI `http://127.0.0.1:41234/oauth/callback` for client id `latchkey` (invalid_redirect_uri): register `http://127.0.0.1/oauth/callback` for client `latchkey` at the provider, allowing any port on 127.0.0.1 (RFC 8252 §7.3)';
  await page.evaluate((m) => { window.__latchkeyMock.failNextLogin = { code: 'redirect_uri_not_registered', message: m }; }, message);
  await page.getByRole('button', { name: 'Log in' }).click();
  const box = page.getByTestId('login-error');
  await box.waitFor();
  assert.equal(await box.getAttribute('data-code'), 'redirect_uri_not_registered');
  assert.equal(await box.getAttribute('role'), 'alert');
  const text = await box.innerText();
  assert.match(text, /Redirect URI not registered at the provider/);
  assert.ok(text.includes(message), text);
  await page.screenshot({ path: join(shots, 'session-login-failed.png') });
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('user').waitFor();
  assert.equal(await page.getByTestId('login-error').count(), 0, 'a successful login clears the failure');
  assert.deepEqual(errors, []);
  await context.close();
});

// The state badges draw the tray's own icons (icons/tray-<state>.png) under the production CSP:
// each picture loads (a blocked one has no natural size), is the very file the tray shows, and the
// badge's words name the state.
test('state badges show the tray icon of their state, loaded under the CSP, and name the state in words', async () => {
  const { page, context, errors } = await open();
  const badgeOf = async (testid) => {
    const shown = await page.getByTestId(testid).first().evaluate(async (el) => {
      const img = el.querySelector('img');
      if (!img.complete) await new Promise((r) => img.addEventListener('load', r, { once: true }));
      return { icon: el.dataset.icon, text: el.textContent.trim(), width: img.naturalWidth, src: img.src };
    });
    // Small pictures are inlined by the build (data:, which the CSP allows for images only).
    const bytes = shown.src.startsWith('data:')
      ? Buffer.from(shown.src.slice(shown.src.indexOf(',') + 1), 'base64')
      : Buffer.from(await (await fetch(new URL(shown.src, base))).arrayBuffer());
    return { ...shown, bytes };
  };
  const tray = (icon) => readFileSync(join(here, '..', '..', 'icons', `tray-${icon.replace('_', '-')}.png`));
  const signedOut = await badgeOf('session-badge');
  assert.deepEqual({ icon: signedOut.icon, text: signedOut.text }, { icon: 'logged_out', text: 'Signed out' });
  assert.equal(signedOut.width, 32, 'the picture loaded under the CSP');
  assert.ok(signedOut.bytes.equals(tray('logged_out')), 'the tray\'s own file');
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('user').waitFor();
  const active = await badgeOf('session-badge');
  assert.deepEqual({ icon: active.icon, text: active.text, width: active.width }, { icon: 'active', text: 'Active', width: 32 });
  assert.ok(active.bytes.equals(tray('active')), 'the tray\'s own file');
  await nav(page, 'Services');
  await page.getByText('Cached (gateway down)').waitFor();
  const cached = await page.getByTestId('credential-badge').filter({ hasText: 'Cached (gateway down)' }).evaluate((el) => el.dataset.icon);
  assert.equal(cached, 'expiring', 'served from the cache: the tray\'s amber padlock');
  assert.deepEqual(errors, [], 'no CSP violation');
  await context.close();
});

test('services show credential state, never values', async () => {
  // Even if a payload carried credential values, the Services screen shows states only.
  const canary = 'canary-credential-value-7d3e9b';
  const withValues = (value) => {
    const ipc = window.__TAURI_INTERNALS__;
    const invoke = ipc.invoke.bind(ipc);
    ipc.invoke = async (cmd, args) => {
      const answer = await invoke(cmd, args);
      if (cmd === 'overview') {
        for (const s of answer.services) Object.assign(s, { api_key: value, values: { token: value } });
      }
      return answer;
    };
  };
  const { page, context, errors } = await open('light', { fn: withValues, arg: canary });
  await nav(page, 'Services');
  await page.getByText('Cached (gateway down)').waitFor();
  assert.ok(!(await page.content()).includes(canary), 'no credential value in the DOM');
  assert.ok(!(await page.evaluate(() => document.body.innerText)).includes(canary), 'none on screen');
  await page.screenshot({ path: join(shots, 'services.png') });
  assert.deepEqual(errors, []);
  await context.close();
});

test('create a client, copy its token once', async () => {
  const { page, context, errors } = await open();
  await nav(page, 'Clients');
  await page.getByLabel('Name').fill('cursor');
  await page.getByLabel('demo').check();
  await page.getByRole('button', { name: 'Create client' }).click();
  const field = page.getByTestId('new-token');
  await field.waitFor();
  const token = await field.inputValue();
  assert.match(token, /^lk_[0-9a-z]{32}$/);
  await page.getByRole('button', { name: 'Copy', exact: true }).click();
  await page.getByRole('button', { name: 'Copied' }).waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), token, 'the clipboard holds the token');
  await page.screenshot({ path: join(shots, 'clients.png') });
  await page.getByRole('button', { name: 'Done' }).click();
  assert.equal(await page.getByTestId('new-token').count(), 0, 'the token is gone once dismissed');
  assert.ok(!(await page.content()).includes(token), 'no trace of the token in the DOM');
  await page.getByRole('cell', { name: 'cursor', exact: true }).waitFor();
  assert.deepEqual(errors, []);
  await context.close();
});

test('a client is given the raw-credentials right only when asked, with the warning shown, and the list says so', async () => {
  const { page, context, errors } = await open();
  await nav(page, 'Clients');
  await page.getByLabel('Name').fill('plain');
  await page.getByLabel('demo').check();
  assert.equal(await page.getByTestId('raw-right-warning').count(), 0, 'no warning while the right is off');
  await page.getByRole('button', { name: 'Create client' }).click();
  await page.getByTestId('new-token').waitFor();
  await page.getByRole('button', { name: 'Done' }).click();
  await page.getByLabel('Name').fill('exec-only');
  await page.getByLabel('demo').check();
  await page.getByLabel("May read its services' raw credentials").check();
  assert.match(await page.getByTestId('raw-right-warning').innerText(), /takes the secrets with it/);
  await page.getByRole('button', { name: 'Create client' }).click();
  await page.getByTestId('new-token').waitFor();
  await page.getByRole('button', { name: 'Done' }).click();
  const row = (name) => page.locator('tbody tr', { has: page.getByRole('cell', { name, exact: true }) });
  await row('exec-only').getByText('can read raw credentials').waitFor();
  assert.equal(await row('plain').getByText('can read raw credentials').count(), 0, 'a plain client has no raw right');
  assert.equal(await page.getByLabel("May read its services' raw credentials").isChecked(), false, 'the box is off again for the next client');
  assert.deepEqual(errors, []);
  await context.close();
});

test('filter activity by service and status, page with load more', async () => {
  const { page, context } = await open();
  await nav(page, 'Activity');
  const rows = page.getByTestId('activity').locator('tbody tr');
  await page.getByRole('button', { name: 'Load more' }).waitFor();
  assert.equal(await rows.count(), 50, 'one page of 50, newest first');
  // Audit times are unix milliseconds (the store's unit): the newest row, 30 s old in the mock,
  // must show today's time, not one read as seconds (a date tens of thousands of years away).
  const newest = Date.parse(await rows.first().locator('time').getAttribute('datetime'));
  assert.ok(Math.abs(Date.now() - 30_000 - newest) < 120_000, `newest row at ${new Date(newest).toISOString()}`);
  await page.getByRole('button', { name: 'Load more' }).click();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=activity] tbody tr').length === 60);
  await page.getByLabel('Service').selectOption('github');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=activity] tbody tr').length === 30);
  for (const text of await rows.allInnerTexts()) assert.match(text, /\bgithub\b/);
  await page.getByLabel('Status').selectOption('server_error');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=activity] tbody tr').length === 8);
  const statuses = await rows.allInnerTexts();
  assert.ok(statuses.length > 0 && statuses.every((t) => /(^|\t)5\d\d/m.test(t)), statuses.join('\n'));
  await page.screenshot({ path: join(shots, 'activity.png') });
  await context.close();
});

test('preview, add and undo a host entry; a malformed host file offers no add', async () => {
  const { page, context, errors } = await open();
  await nav(page, 'Hosts');
  await page.getByLabel('Host').selectOption('claude-code');
  await page.getByRole('button', { name: 'Preview' }).click();
  assert.match(await page.getByTestId('preview').innerText(), /"headersHelper": "\/usr\/local\/bin\/latchkey headers claude-code"/);
  await page.getByRole('button', { name: 'Add to Claude Code' }).click();
  assert.match(await page.getByTestId('applied').innerText(), /Backup: .*\.claude\.json\.latchkey-backup-/);
  await page.getByRole('cell', { name: 'latchkey-demo' }).waitFor();
  await page.screenshot({ path: join(shots, 'hosts.png') });
  await page.getByRole('button', { name: 'Undo last change' }).click();
  await page.getByRole('cell', { name: 'latchkey-demo' }).waitFor({ state: 'detached' });
  await page.getByLabel('Host').selectOption('vscode');
  await page.getByRole('button', { name: 'Preview' }).click();
  await page.getByRole('alert').waitFor();
  assert.equal(await page.getByRole('button', { name: /^Add to/ }).count(), 0);
  assert.deepEqual(errors, []);
  await context.close();
});

test('connections and settings screens render', async () => {
  const { page, context } = await open();
  await nav(page, 'Connections');
  await page.getByRole('cell', { name: 'sse' }).waitFor();
  await page.screenshot({ path: join(shots, 'connections.png') });
  await nav(page, 'Settings');
  await page.getByLabel('Log in with the system browser').check();
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByText('Saved.').waitFor();
  assert.equal(await page.evaluate(() => window.__latchkeyMock.settings.use_system_browser), true);
  await page.screenshot({ path: join(shots, 'settings.png') });
  await context.close();
});

test('the window starts when the platform language is the POSIX "C" locale (WebKitGTK under LANG=C.UTF-8)', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.addInitScript(() => {
    Object.defineProperty(navigator, 'language', { get: () => 'C', configurable: true });
    Object.defineProperty(navigator, 'languages', { get: () => ['C'], configurable: true });
  });
  await page.addInitScript({ path: join(here, 'ipc-mock.js') });
  await page.goto(base);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByTestId('user').waitFor();
  await page.getByRole('navigation').getByRole('button', { name: 'Activity', exact: true }).click();
  await page.getByTestId('activity').locator('tbody tr').first().waitFor();
  assert.deepEqual(errors, [], 'no script error: a RangeError from Intl would leave the window empty');
  await context.close();
});
