// First run in the built UI (ui/dist) in Debian's Chromium, the Tauri IPC replaced by ipc-mock.js
// plus the setup commands below (answering as src-tauri/src/setup.rs does): with no
// configuration the window opens on Set up Latchkey; a wrong issuer shows the exact reason on its
// field; the right one shows what discovery found, Save writes it and the usual window follows;
// an imported file with a mistake names its line. Photographed at 360 and 1024 px.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
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

// Installed after ipc-mock.js: no configuration yet, and the setup commands.
function setupMock() {
  const mock = window.__latchkeyMock;
  const internals = window.__TAURI_INTERNALS__;
  const path = '/home/alice/.config/latchkey/config.toml';
  mock.config = { state: 'missing', path };
  mock.saved = [];
  const inner = internals.invoke.bind(internals);
  const draft = (issuer, clientId) => ({
    toml: `version = 1\n[[accounts]]\nname = "work"\nissuer = "${issuer}"\nclient_id = "${clientId}"\n`,
    summary: { accounts: [{ name: 'work', issuer, client_id: clientId }], gateway_url: null, services: [], servers: [] },
    provider: {
      issuer, authorization_endpoint: `${issuer}/auth`, token_endpoint: `${issuer}/token`, jwks_uri: `${issuer}/jwks`,
      revocation_endpoint: `${issuer}/token/revocation`, scopes: ['openid', 'profile', 'email', 'offline_access'],
      pkce_methods: ['S256'], client_check: 'accepted',
    },
  });
  internals.invoke = async (cmd, args = {}) => {
    if (cmd === 'overview') return { ...(await inner(cmd, args)), config: mock.config };
    if (cmd === 'setup_connect') {
      const { issuer, client_id: clientId } = args.form;
      if (issuer.includes('login.example.org')) {
        throw { code: 'issuer_mismatch', field: 'issuer', message: 'cannot use the identity provider at https://login.example.org: it says its issuer is `https://login.example.com`, not the configured one; fix `issuer` in the configuration' };
      }
      if (clientId !== 'latchkey') {
        throw { code: 'client_not_registered', field: 'client_id', message: `the identity provider does not accept client id \`${clientId}\` (invalid_client)` };
      }
      return draft(issuer, clientId);
    }
    if (cmd === 'setup_import_text') {
      if (args.text.includes('colour')) {
        throw { code: 'config_invalid', field: null, message: `${args.origin}:6:1: unknown field \`colour\`\n  fix: remove or rename the key` };
      }
      return { ...draft('https://login.example.com', 'latchkey'), provider: null };
    }
    if (cmd === 'setup_save') {
      mock.saved.push(args.toml);
      mock.config = { state: 'loaded', path };
      for (const id of mock.listeners['latchkey://changed'] ?? []) internals.callbacks[id]?.({ event: 'latchkey://changed', id, payload: null });
      return { path, backup: null };
    }
    return inner(cmd, args);
  };
}

async function open({ width = 1024, scheme = 'light' } = {}) {
  const context = await browser.newContext({ colorScheme: scheme, viewport: { width, height: 760 } });
  const page = await context.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.addInitScript({ path: join(here, 'ipc-mock.js') });
  await page.addInitScript(setupMock);
  await page.goto(base);
  await page.getByRole('heading', { name: 'Set up Latchkey', level: 1 }).waitFor();
  return { page, context, errors };
}

test('with no configuration the window connects to the organisation: exact reasons first, then discovery, Save', async () => {
  const { page, context, errors } = await open();
  assert.equal(await page.getByRole('heading', { name: 'Session' }).count(), 0, 'setup instead of an empty screen');

  await page.getByRole('button', { name: 'Check' }).click();
  assert.match(await page.locator('#issuer-problem').innerText(), /issuer URL/);
  assert.match(await page.locator('#client-problem').innerText(), /client ID/);
  assert.equal(await page.getByLabel('Issuer URL').getAttribute('aria-invalid'), 'true');
  const focused = () => page.evaluate(() => document.activeElement?.getAttribute('name'));
  assert.equal(await focused(), 'issuer', 'the first field refused takes the focus');

  await page.getByLabel('Issuer URL').fill('http://login.example.com');
  await page.getByLabel('Client ID').fill('latchkey');
  await page.getByRole('button', { name: 'Check' }).click();
  assert.match(await page.locator('#issuer-problem').innerText(), /must use https/);

  await page.getByLabel('Issuer URL').fill('https://login.example.org');
  await page.getByRole('button', { name: 'Check' }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /The provider names another issuer/);
  assert.match(await page.locator('#issuer-problem').innerText(), /it says its issuer is `https:\/\/login\.example\.com`/);
  assert.equal(await page.getByRole('button', { name: 'Save' }).count(), 0, 'nothing to save after a failure');

  await page.getByLabel('Issuer URL').fill('https://login.example.com');
  await page.getByLabel('Client ID').fill('nobody');
  await page.getByRole('button', { name: 'Check' }).click();
  await page.locator('#client-problem').waitFor();
  assert.match(await page.getByRole('alert').innerText(), /does not know this client ID/);
  assert.equal(await focused(), 'client_id', "the field the provider refused takes the focus");

  await page.getByLabel('Client ID').fill('latchkey');
  await page.getByRole('button', { name: 'Check' }).click();
  await page.getByRole('heading', { name: 'Found your identity provider' }).waitFor();
  const preview = await page.getByRole('region', { name: 'What will be saved' }).innerText();
  assert.match(preview, /https:\/\/login\.example\.com\/token/);
  assert.match(preview, /S256/);
  assert.match(preview, /accepted by the provider/);
  await page.screenshot({ path: join(shots, 'setup-preview-light.png') });
  assert.deepEqual(await page.evaluate(() => window.__latchkeyMock.saved), [], 'nothing written before Save');

  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByRole('button', { name: 'Log in' }).waitFor();
  const saved = await page.evaluate(() => window.__latchkeyMock.saved);
  assert.equal(saved.length, 1);
  assert.match(saved[0], /issuer = "https:\/\/login\.example\.com"/);
  assert.deepEqual(errors, []);
  await context.close();
});

test('an imported configuration with a mistake names its line; a good one is previewed, then saved', async () => {
  const { page, context, errors } = await open({ width: 360, scheme: 'dark' });
  await page.getByRole('button', { name: 'Import a configuration' }).click();
  await page.getByRole('button', { name: 'Check pasted text' }).click();
  await page.getByText('Paste the configuration text first.').waitFor();
  await page.getByLabel('Or paste it').fill('version = 1\n[[accounts]]\nname = "w"\nissuer = "https://login.example.com"\nclient_id = "x"\ncolour = "blue"\n');
  await page.getByRole('button', { name: 'Check pasted text' }).click();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /This configuration has a mistake/);
  assert.match(await alert.innerText(), /the pasted configuration:6:1: unknown field `colour`/);

  await page.getByLabel('Configuration URL').fill('http://intranet.example.com/latchkey.toml');
  await page.getByRole('button', { name: 'Fetch' }).click();
  assert.match(await page.locator('#source-problem').innerText(), /https:\/\//);

  await page.getByLabel('Or paste it').fill('version = 1\n[[accounts]]\nname = "work"\nissuer = "https://login.example.com"\nclient_id = "latchkey"\n');
  await page.getByRole('button', { name: 'Check pasted text' }).click();
  await page.getByRole('heading', { name: 'This configuration' }).waitFor();
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 360, `no sideways scrolling at 360 px (${width})`);
  await page.screenshot({ path: join(shots, 'setup-import-dark-360.png'), fullPage: true });
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByRole('button', { name: 'Log in' }).waitFor();
  assert.deepEqual(errors, []);
  await context.close();
});
