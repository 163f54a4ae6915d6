// A tray line opens the window at its item: by `#open=<section>/<item>` in the address when the
// tray creates the window, by the `latchkey://open-section` event when it is already open. The
// item's section is shown and the item itself has the keyboard focus, so a person (and a screen
// reader) lands on what the tray line named.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { start } from './chromium.mjs';

let chromium;
before(async () => { chromium = await start(); });
after(async () => { await chromium?.close(); });

/** The section shown and the `data-name` of the item holding the focus (null when none does). */
function where(page) {
  return page.evaluate(() => ({
    section: document.querySelector('nav button[aria-current="page"]')?.textContent?.trim() ?? null,
    focused: document.activeElement?.closest('[data-name]')?.getAttribute('data-name') ?? null,
  }));
}

async function until(page, want) {
  const deadline = Date.now() + 5000;
  let seen;
  while (Date.now() < deadline) {
    seen = await where(page);
    if (seen.section === want.section && seen.focused === want.focused) return seen;
    await page.waitForTimeout(50);
  }
  assert.deepEqual(seen, want);
  return seen;
}

test('the address #open=<section>/<item> opens the window at that item', async () => {
  for (const [hash, want] of [
    ['#open=MCP+servers/stripe', { section: 'MCP servers', focused: 'stripe' }],
    ['#open=Services/github', { section: 'Services', focused: 'github' }],
  ]) {
    const { page, context, errors } = await chromium.open({ loggedOut: true });
    await page.goto('about:blank');
    await page.goto(`${chromium.base}/${hash}`);
    await until(page, want);
    assert.deepEqual(errors, [], `${hash}: no console errors`);
    await context.close();
  }
});

test('an unknown section or item in the address leaves the window where it starts', async () => {
  for (const hash of ['#open=Nowhere/stripe', '#open=Services/not-a-service', '#open=Services']) {
    const { page, context, errors } = await chromium.open({ loggedOut: true });
    await page.goto('about:blank');
    await page.goto(`${chromium.base}/${hash}`);
    await page.getByRole('navigation').waitFor();
    await page.waitForTimeout(300);
    const seen = await where(page);
    assert.equal(seen.focused, null, `${hash}: nothing focused`);
    assert.ok(['Session', 'Services'].includes(seen.section), `${hash}: ${JSON.stringify(seen)}`);
    assert.deepEqual(errors, [], `${hash}: no console errors`);
    await context.close();
  }
});

test('the open-section event moves an open window to the item', async () => {
  const { page, context, errors } = await chromium.open();
  await until(page, { section: 'Session', focused: null });
  const emit = (payload) => page.evaluate((p) => {
    const internals = window.__TAURI_INTERNALS__;
    for (const id of window.__latchkeyMock.listeners['latchkey://open-section'] ?? []) {
      internals.callbacks[id]?.({ event: 'latchkey://open-section', id, payload: p });
    }
  }, payload);
  await emit({ section: 'MCP servers', item: 'sentry' });
  await until(page, { section: 'MCP servers', focused: 'sentry' });
  await emit({ section: 'Services', item: 'demo' });
  await until(page, { section: 'Services', focused: 'demo' });
  assert.deepEqual(errors, []);
  await context.close();
});

test('an activity row says its status and its error code as two words', async () => {
  const { page, context, errors } = await chromium.open();
  await page.getByRole('navigation').getByRole('button', { name: 'Activity', exact: true }).click();
  const cell = page.locator('td[data-label="Status"]', { hasText: 'upstream_status' }).first();
  await cell.waitFor();
  assert.match(await cell.innerText(), /^\d{3} upstream_status$/);
  assert.match(await cell.textContent(), /^\d{3} upstream_status$/, 'a screen reader reads two words too');
  assert.deepEqual(errors, []);
  await context.close();
});

test('the Activity screen says when the log lost rows, and only then', async () => {
  const { page, context, errors } = await chromium.open();
  const activity = () => page.getByRole('navigation').getByRole('button', { name: 'Activity', exact: true }).click();
  await activity();
  await page.locator('main h1').first().waitFor();
  assert.equal(await page.getByTestId('activity-lost').count(), 0, 'nothing lost, nothing said');
  await page.evaluate(() => {
    window.__latchkeyMock.activityLost = 3;
    const internals = window.__TAURI_INTERNALS__;
    for (const id of window.__latchkeyMock.listeners['latchkey://changed'] ?? []) {
      internals.callbacks[id]?.({ event: 'latchkey://changed', id, payload: null });
    }
  });
  const notice = page.getByTestId('activity-lost');
  await notice.waitFor();
  assert.match(await notice.innerText(), /^3 requests since Latchkey started could not be recorded here/);
  assert.deepEqual(errors, []);
  await context.close();
});
