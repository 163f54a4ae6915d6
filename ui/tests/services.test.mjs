// Services → Add / Edit / Remove and the Auth Gateway API key in the built UI (ui/dist) in
// Debian's Chromium, the Tauri IPC replaced by ipc-mock.js plus the service commands below,
// which answer as src-tauri/src/setup.rs does (a refusal is the configuration's own text with the
// field it is about) and change the services the overview lists, as the runtime's reload would.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { shots, show, start } from './chromium.mjs';

let chromium;
before(async () => { chromium = await start(); });
after(async () => { await chromium?.close(); });

// Installed after ipc-mock.js: the configured services live here.
function servicesMock() {
  const mock = window.__latchkeyMock;
  const internals = window.__TAURI_INTERNALS__;
  const path = '/home/alice/.config/latchkey/config.toml';
  mock.services = [
    { name: 'github', account: 'sandbox', upstream: 'https://api.github.com/', source: 'access_token', state: 'not_fetched', fetched_at: null, expires_at: null, ttl_seconds: 3600, message: null },
  ];
  mock.requests = [];
  mock.apiKeys = 0;
  const changed = () => { for (const id of mock.listeners['latchkey://changed'] ?? []) internals.callbacks[id]?.({ event: 'latchkey://changed', id, payload: null }); };
  const inner = internals.invoke.bind(internals);
  internals.invoke = async (cmd, args = {}) => {
    if (cmd === 'overview') return { ...(await inner(cmd, args)), services: mock.services.map((s) => ({ ...s })) };
    if (cmd === 'service_add') {
      const s = args.service;
      mock.requests.push(s);
      if (!s.upstream.startsWith('https://')) {
        throw { code: 'config_invalid', field: 'upstream', message: `${path}:14:12: upstream \`${s.upstream}/\` is not https://\n  fix: use an https:// upstream; plain http is only allowed for a loopback upstream with allow_loopback_http = true` };
      }
      mock.services.push({ name: s.name, account: s.account, upstream: `${s.upstream}/`, source: s.source, state: 'not_fetched', fetched_at: null, expires_at: null, ttl_seconds: s.ttl_seconds ?? 3600, message: null });
      changed();
      return null;
    }
    if (cmd === 'service_remove') {
      mock.services = mock.services.filter((s) => s.name !== args.name);
      changed();
      return null;
    }
    if (cmd === 'set_gateway_api_key') { mock.apiKeys += 1; return null; }
    return inner(cmd, args);
  };
}

test('a service is added (a bad upstream refused on its field), listed, and removed after a confirmation; the API key is write-only', async () => {
  const { page, context, errors } = await chromium.open({ width: 1024, loggedOut: true });
  await page.addInitScript(servicesMock);
  await page.reload();
  await show(page, 'Services');
  const rows = page.getByTestId('service-row');
  assert.equal(await rows.count(), 1);

  await page.getByRole('button', { name: 'Add service' }).click();
  const form = page.getByRole('form', { name: 'Add service' });
  await form.getByRole('button', { name: 'Save' }).click();
  assert.match(await page.locator('#svc-name-problem').innerText(), /Enter a name/);
  assert.match(await page.locator('#svc-upstream-problem').innerText(), /upstream URL/);
  assert.deepEqual(await page.evaluate(() => window.__latchkeyMock.requests), [], 'nothing sent with empty fields');
  const focused = () => page.evaluate(() => document.activeElement?.getAttribute('name'));
  assert.equal(await focused(), 'name', 'the first field refused takes the focus');

  await form.getByRole('textbox', { name: /^Name/ }).fill('linear');
  await form.getByLabel('Upstream URL').fill('http://api.linear.app');
  await form.getByRole('button', { name: 'Save' }).click();
  const problem = page.locator('#svc-upstream-problem');
  await problem.waitFor();
  assert.match(await problem.innerText(), /upstream `http:\/\/api\.linear\.app\/` is not https:\/\//);
  assert.equal(await form.getByLabel('Upstream URL').getAttribute('aria-invalid'), 'true');
  assert.equal(await focused(), 'upstream', 'the field the engine refused takes the focus');
  assert.equal(await rows.count(), 1, 'a refused service is not listed');

  await form.getByLabel('Upstream URL').fill('https://api.linear.app');
  await form.getByRole('button', { name: 'Save' }).click();
  await page.locator('[data-testid="service-row"][data-name="linear"]').waitFor();
  const sent = await page.evaluate(() => window.__latchkeyMock.requests.at(-1));
  assert.deepEqual(sent.credentials, [{ name: 'access_token', header: 'Authorization', prefix: 'Bearer ' }]);
  assert.equal(sent.account, 'sandbox');
  await page.screenshot({ path: join(shots, 'services-added.png') });

  await page.getByRole('button', { name: 'Remove linear' }).click();
  assert.equal(await page.locator('[data-name="linear"]').count(), 1, 'nothing removed before the confirmation');
  await page.getByRole('button', { name: 'Remove linear', exact: true }).last().click();
  await page.locator('[data-name="linear"]').waitFor({ state: 'detached' });
  assert.equal(await rows.count(), 1);

  const key = page.getByRole('textbox', { name: 'API key', exact: true });
  await key.fill('gw-key-123');
  await page.getByRole('form', { name: 'Auth Gateway API key' }).getByRole('button', { name: 'Save' }).click();
  await page.getByText('Stored in the keychain. Latchkey never shows it again.').waitFor();
  assert.equal(await key.inputValue(), '', 'the field is cleared after Save');
  assert.equal(await key.getAttribute('type'), 'password');
  assert.equal(await page.evaluate(() => window.__latchkeyMock.apiKeys), 1);
  assert.equal(await page.getByText('gw-key-123').count(), 0);
  assert.deepEqual(errors, []);
  await context.close();
});
