// The MCP servers section of the built UI (ui/dist) in Debian's Chromium, with the Tauri IPC
// replaced by ipc-mock.js: add a server by URL (signing in → ready, with its expiry), an add the
// engine refuses (its message shown, nothing added), a removal after a confirmation, all by
// keyboard where a person would. Each state is photographed at 360 and 1024 px wide, light and
// dark, into tests/output/ui/, and no width scrolls sideways.
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

/** The app at `width` px in `scheme`, on the MCP servers section. */
async function open({ width = 1024, scheme = 'light' } = {}) {
  const context = await browser.newContext({ colorScheme: scheme, viewport: { width, height: 760 } });
  const page = await context.newPage();
  const errors = [];
  const requests = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('request', (r) => requests.push(r.url()));
  await page.addInitScript({ path: join(here, 'ipc-mock.js') });
  await page.goto(base);
  await page.getByRole('navigation').getByRole('button', { name: 'MCP servers', exact: true }).click();
  await page.getByRole('heading', { name: 'MCP servers', level: 1 }).waitFor();
  return { page, context, errors, requests };
}

/** Nothing on the page is wider than the window. */
async function assertNoSidewaysScroll(page, what) {
  const { scroll, client } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth }));
  assert.ok(scroll <= client, `${what}: the page is ${scroll} px wide in a ${client} px window`);
}

const card = (page, name) => page.locator(`[data-testid=server][data-name="${name}"]`);

test('add an MCP server by URL: it signs in, then is listed as ready with its expiry', async () => {
  const { page, context, errors, requests } = await open({ width: 360 });
  await page.evaluate(() => { window.__latchkeyMock.holdServerLogins = true; });

  // By keyboard: the button opens the dialog with focus in the URL field.
  await page.getByRole('button', { name: 'Add MCP server' }).focus();
  await page.keyboard.press('Enter');
  const dialog = page.getByRole('dialog', { name: 'Add MCP server' });
  await dialog.waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'server-url', 'focus starts in the URL field');

  // A plain-http URL elsewhere is refused before anything is sent.
  await page.keyboard.type('http://mcp.linear.app/mcp');
  await page.keyboard.press('Enter');
  await page.getByTestId('url-problem').waitFor();
  assert.match(await page.getByTestId('url-problem').innerText(), /Use https:\/\//);
  assert.equal(await page.evaluate(() => window.__latchkeyMock.servers.some((s) => s.name === 'linear')), false, 'nothing was sent');

  await page.getByLabel('Server URL').fill('https://mcp.linear.app/mcp');
  await page.getByLabel('Name (optional)').fill('linear');
  await page.getByLabel('Name (optional)').press('Enter');

  // While the sign-in runs: a progress status in the dialog, the server listed as signing in.
  const progress = dialog.getByTestId('add-progress');
  await progress.waitFor();
  assert.match(await progress.innerText(), /Signing in to https:\/\/mcp\.linear\.app\/mcp/);
  assert.equal(await progress.getAttribute('role'), 'status');
  assert.ok(await page.getByLabel('Server URL').isDisabled(), 'the form waits for the sign-in');
  await card(page, 'linear').getByTestId('server-badge').filter({ hasText: 'Signing in…' }).waitFor();
  await assertNoSidewaysScroll(page, 'add dialog, signing in, 360 px');
  await page.screenshot({ path: join(shots, 'servers-add-signing-in-360-light.png') });

  await page.evaluate(() => window.__latchkeyMock.finishServerLogin());
  await dialog.waitFor({ state: 'detached' });
  const linear = card(page, 'linear');
  assert.equal(await linear.getByTestId('server-badge').innerText(), 'Ready');
  assert.equal(await linear.getByTestId('server-issuer').innerText(), 'https://auth.linear.app');
  assert.match(await linear.getByTestId('server-expiry').innerText(), /^(1 h 00 min|59 min \d+ s)$/);
  assert.equal(await page.getByTestId('servers-notice').innerText(), 'linear added and signed in.');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'server-linear', 'focus moves to the new server');
  assert.equal(await page.getByTestId('servers-summary').innerText(), '2 MCP servers ready');
  await assertNoSidewaysScroll(page, 'servers, 360 px');

  assert.deepEqual(errors, []);
  assert.ok(requests.every((u) => u.startsWith(base)), `no request leaves the app (fonts, CDNs): ${requests.filter((u) => !u.startsWith(base)).join(', ')}`);
  await context.close();
});

test('More options: a client ID and secret registered beforehand, scopes and a callback port, from the keyboard', async () => {
  const { page, context, errors } = await open({ width: 360 });
  await page.getByRole('button', { name: 'Add MCP server' }).click();
  const dialog = page.getByRole('dialog', { name: 'Add MCP server' });
  await dialog.waitFor();
  await page.getByLabel('Server URL').fill('https://mcp.corp.example/mcp');
  await page.getByRole('button', { name: 'More options…' }).focus();
  await page.keyboard.press('Enter');
  await page.getByLabel('Client secret (optional)').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'server-client-id', 'focus moves to the first field shown');
  const secret = page.getByLabel('Client secret (optional)');
  assert.equal(await secret.getAttribute('type'), 'password', 'the secret is masked');
  await page.getByLabel('Client ID').fill('latchkey-desktop');
  await secret.fill('canary-client-secret');
  await page.getByLabel('Scopes (optional)').fill('read write');
  await page.getByLabel('Callback port (optional)').fill('80');
  await page.getByLabel('Callback port (optional)').press('Enter');
  await dialog.getByTestId('port-problem').waitFor();
  assert.equal(await page.evaluate(() => window.__latchkeyMock.lastAddRequest ?? null), null, 'nothing sent with a refused port');
  await assertNoSidewaysScroll(page, 'add dialog, more options, 360 px');
  await page.screenshot({ path: join(shots, 'servers-add-more-options-360-light.png') });

  await page.getByLabel('Callback port (optional)').fill('33418');
  await page.getByLabel('Callback port (optional)').press('Enter');
  await dialog.waitFor({ state: 'detached' });
  assert.deepEqual(await page.evaluate(() => window.__latchkeyMock.lastAddRequest), {
    url: 'https://mcp.corp.example/mcp',
    name: undefined,
    client_id: 'latchkey-desktop',
    client_secret: 'canary-client-secret',
    scopes: ['read', 'write'],
    callback_port: 33418,
    allow_insecure_loopback: false,
  });
  assert.equal(await card(page, 'corp').getByTestId('server-badge').innerText(), 'Ready');
  assert.ok(!(await page.content()).includes('canary-client-secret'), 'the secret is nowhere on the page afterwards');
  assert.deepEqual(errors, []);
  await context.close();
});

test("a refused add shows the engine's heading and message, and adds nothing", async () => {
  const { page, context, errors } = await open({ width: 360 });
  const message =
    'the protected-resource metadata of `https://mcp.example.com/mcp` names the resource `https://attacker.example/mcp`; Latchkey refuses a server whose metadata is for another resource (mix-up protection). Check the URL you pasted.';
  await page.evaluate((m) => { window.__latchkeyMock.refuseNextAdd = { code: 'mcp_oauth_resource_mismatch', message: m }; }, message);
  const before = await page.getByTestId('server').count();
  await page.getByRole('button', { name: 'Add MCP server' }).click();
  await page.getByLabel('Server URL').fill('https://mcp.example.com/mcp');
  await page.getByRole('button', { name: 'Add and sign in' }).click();
  const box = page.getByRole('dialog').getByTestId('add-error');
  await box.waitFor();
  assert.equal(await box.getAttribute('data-code'), 'mcp_oauth_resource_mismatch');
  assert.equal(await box.getAttribute('role'), 'alert');
  const text = await box.innerText();
  assert.match(text, /Refused: the metadata is for another server/);
  assert.ok(text.includes(message), text);
  assert.equal(await page.getByLabel('Server URL').inputValue(), 'https://mcp.example.com/mcp', 'the URL stays to be fixed');
  assert.equal(await page.evaluate(() => document.activeElement?.id), 'server-url');
  await assertNoSidewaysScroll(page, 'refused add, 360 px');
  await page.screenshot({ path: join(shots, 'servers-add-refused-360-light.png') });

  // Escape closes the dialog; focus returns to the button; the list is as it was.
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'detached' });
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Add MCP server');
  assert.equal(await page.getByTestId('server').count(), before, 'nothing added');
  assert.equal(await page.evaluate(() => window.__latchkeyMock.servers.length), before);
  assert.deepEqual(errors, []);
  await context.close();
});

test('log in to a server that needs it, grant more access, remove one after confirming', async () => {
  const { page, context, errors } = await open();
  await card(page, 'sentry').getByRole('button', { name: 'Log in' }).click();
  await card(page, 'sentry').getByTestId('server-badge').filter({ hasText: 'Ready' }).waitFor();
  await card(page, 'stripe').getByRole('button', { name: 'Grant more access' }).click();
  await card(page, 'stripe').getByTestId('server-badge').filter({ hasText: 'Ready' }).waitFor();

  const notion = card(page, 'notion');
  await notion.getByRole('button', { name: 'Remove notion' }).click();
  const confirm = notion.getByRole('group');
  await confirm.waitFor();
  assert.match(await confirm.innerText(), /Remove notion\? Latchkey revokes its tokens/);
  assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Keep', 'the safe choice has focus');
  await page.screenshot({ path: join(shots, 'servers-remove-confirm-1024-light.png') });
  await page.keyboard.press('Escape');
  await confirm.waitFor({ state: 'detached' });
  assert.equal(await page.evaluate(() => window.__latchkeyMock.servers.some((s) => s.name === 'notion')), true, 'Escape keeps it');

  await notion.getByRole('button', { name: 'Remove notion' }).click();
  await confirm.getByRole('button', { name: 'Remove notion' }).click();
  await notion.waitFor({ state: 'detached' });
  assert.match(await page.getByTestId('servers-notice').innerText(), /notion removed/);
  assert.equal(await page.evaluate(() => window.__latchkeyMock.servers.some((s) => s.name === 'notion')), false);
  assert.deepEqual(errors, []);
  await context.close();
});

test('a remote server is offered to local clients and host entries like a service', async () => {
  const { page, context, errors } = await open();
  await page.getByRole('navigation').getByRole('button', { name: 'Clients', exact: true }).click();
  await page.getByLabel('Name').fill('cursor');
  await page.getByLabel('notion (MCP server)').check();
  await page.getByRole('button', { name: 'Create client' }).click();
  await page.getByTestId('new-token').waitFor();
  assert.deepEqual(await page.evaluate(() => window.__latchkeyMock.clients.find((c) => c.name === 'cursor')?.services), ['notion']);
  await page.getByRole('button', { name: 'Done' }).click();
  await page.getByRole('navigation').getByRole('button', { name: 'Hosts', exact: true }).click();
  await page.getByLabel('Host').selectOption('claude-code');
  await page.getByLabel('Client').selectOption('cursor');
  await page.getByLabel('Service').selectOption('notion');
  await page.getByRole('button', { name: 'Preview' }).click();
  assert.match(await page.getByTestId('preview').innerText(), /"url": "http:\/\/127\.0\.0\.1:47821\/notion\/mcp"/);
  assert.deepEqual(errors, []);
  await context.close();
});

for (const width of [360, 1024]) {
  for (const scheme of ['light', 'dark']) {
    test(`the MCP servers section at ${width} px, ${scheme}`, async () => {
      const { page, context, errors } = await open({ width, scheme });
      await card(page, 'stripe').waitFor();
      if (scheme === 'dark') {
        const bg = await page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--bg').trim());
        assert.equal(bg, '#17191c', 'dark palette applied');
      }
      await assertNoSidewaysScroll(page, `servers, ${width} px, ${scheme}`);
      await page.screenshot({ path: join(shots, `servers-${width}-${scheme}.png`), fullPage: true });
      await page.getByRole('button', { name: 'Add MCP server' }).click();
      await page.getByLabel('Server URL').fill('https://mcp.linear.app/mcp');
      await assertNoSidewaysScroll(page, `add dialog, ${width} px, ${scheme}`);
      await page.screenshot({ path: join(shots, `servers-add-${width}-${scheme}.png`) });
      assert.deepEqual(errors, []);
      await context.close();
    });
  }
}
