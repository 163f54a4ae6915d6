// Accessibility in real Chromium: axe-core (injected through DevTools, so the page's CSP stays as
// shipped) finds no serious or critical violation on any screen in either theme, logged out or
// in, nor in the Add MCP server dialog; and the window works from the keyboard alone: Tab reaches
// every control with a visible focus ring, the navigation is operated with Enter, and Escape
// closes the dialog and the removal confirmation, giving focus back to what opened them.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { SCREENS, show, start } from './chromium.mjs';

const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
let chrome;
before(async () => { chrome = await start(); });
after(async () => { await chrome?.close(); });

/** Serious and critical axe violations on the page as it is, one line each. */
async function violations(page) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .flatMap((v) => v.nodes.map((n) => `${v.id} (${v.impact}): ${n.target.join(' ')} — ${n.failureSummary?.split('\n')[1]?.trim() ?? v.help}`));
}

for (const scheme of ['light', 'dark']) {
  test(`no serious accessibility violation on any screen, ${scheme} theme`, async () => {
    const found = [];
    const out = await chrome.open({ scheme, loggedOut: true });
    for (const v of await violations(out.page)) found.push(`Session (logged out): ${v}`);
    await out.context.close();
    const { page, context } = await chrome.open({ scheme });
    for (const screen of SCREENS) {
      await show(page, screen);
      for (const v of await violations(page)) found.push(`${screen}: ${v}`);
    }
    await show(page, 'MCP servers');
    await page.getByRole('button', { name: 'Add MCP server' }).click();
    await page.getByRole('dialog').waitFor();
    for (const v of await violations(page)) found.push(`Add MCP server dialog: ${v}`);
    await page.getByRole('button', { name: 'More options…' }).click();
    await page.getByLabel('Client secret (optional)').waitFor();
    for (const v of await violations(page)) found.push(`Add MCP server dialog, more options: ${v}`);
    assert.deepEqual(found, [], 'axe-core reports no serious or critical violation');
    await context.close();
  });
}

/** What has focus: its role-ish tag, its accessible text, and whether its focus ring shows. */
const focused = (page) => page.evaluate(() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return {
    tag: el.tagName.toLowerCase(),
    text: (el.getAttribute('aria-label') ?? el.textContent ?? '').trim(),
    ring: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
  };
});

test('keyboard only: Tab reaches every control of every screen with a visible focus ring', async () => {
  const { page, context } = await chrome.open({ loggedOut: true });
  await page.keyboard.press('Tab');
  assert.equal((await focused(page)).text, 'Session', 'the first Tab reaches the navigation');
  // Log in from the keyboard: Tab on to the button, Enter.
  for (let n = 0; n < 20 && (await focused(page)).text !== 'Log in'; n += 1) await page.keyboard.press('Tab');
  assert.equal((await focused(page)).text, 'Log in', 'Tab reaches Log in');
  await page.keyboard.press('Enter');
  await page.getByTestId('user').waitFor();
  for (const [i, screen] of SCREENS.entries()) {
    // From the navigation's first button, Tab to the screen's button; Enter opens it.
    await page.locator('nav button').first().focus();
    for (let n = 0; n < i; n += 1) await page.keyboard.press('Tab');
    assert.equal((await focused(page)).text, screen, `Tab ${i} times more reaches "${screen}"`);
    await page.keyboard.press('Enter');
    await page.locator('main h1').first().waitFor();
    assert.equal(await page.locator('main h1').first().innerText(), screen === 'MCP servers' ? 'MCP servers' : screen, `Enter opens ${screen}`);
    // Every enabled control in <main> is reached by Tab, each with its focus ring.
    const controls = await page.evaluate(() => [...document.querySelectorAll('main button:not([disabled]), main input, main select, main a[href], main [tabindex="0"]')].filter((e) => e.getClientRects().length > 0).length);
    const reached = new Set();
    for (let n = 0; n < controls + 12 && reached.size < controls; n += 1) {
      await page.keyboard.press('Tab');
      const f = await focused(page);
      const inMain = await page.evaluate(() => !!document.activeElement?.closest('main'));
      if (!inMain) continue;
      assert.ok(f.ring, `${screen}: the focused ${f.tag} "${f.text}" shows a focus ring`);
      reached.add(await page.evaluate(() => {
        const all = [...document.querySelectorAll('main *')];
        return all.indexOf(document.activeElement);
      }));
    }
    assert.equal(reached.size, controls, `${screen}: Tab reaches all ${controls} controls`);
  }
  await context.close();
});

test('keyboard only: Escape closes the Add MCP server dialog and the removal confirmation', async () => {
  const { page, context } = await chrome.open({});
  await show(page, 'MCP servers');
  const add = page.getByRole('button', { name: 'Add MCP server' });
  await add.focus();
  await page.keyboard.press('Enter');
  await page.getByRole('dialog').waitFor();
  assert.equal((await focused(page)).tag, 'input', 'the dialog opens with focus in its first field');
  await page.keyboard.press('Escape');
  await page.getByRole('dialog').waitFor({ state: 'detached' });
  assert.equal((await focused(page)).text, 'Add MCP server', 'Escape closes it and focus returns to its button');

  const remove = page.getByRole('button', { name: /^Remove/ }).first();
  await remove.focus();
  await page.keyboard.press('Enter');
  const keep = page.getByRole('button', { name: 'Keep' });
  await keep.waitFor();
  await keep.focus();
  await page.keyboard.press('Escape');
  await keep.waitFor({ state: 'detached' });
  assert.match((await focused(page)).text, /^Remove/, 'Escape keeps the server and focus returns to Remove');
  await context.close();
});
