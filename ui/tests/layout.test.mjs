// Every screen at 360, 440 (the default) and 1024 px, light and dark, in real Chromium: nothing
// sticks out sideways (no horizontal scrolling), and each is kept as a screenshot under
// tests/output/ui/ (CI keeps them as artifacts).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SCREENS, overflows, shots, show, start } from './chromium.mjs';

let chrome;
before(async () => { chrome = await start(); });
after(async () => { await chrome?.close(); });

for (const scheme of ['light', 'dark']) {
  for (const width of [360, 440, 1024]) {
    test(`every screen fits ${width} px in the ${scheme} theme`, async () => {
      const { page, context, errors } = await chrome.open({ width, scheme });
      const found = [];
      for (const screen of SCREENS) {
        await show(page, screen);
        await page.screenshot({ path: join(shots, `layout-${screen.toLowerCase().replace(/\s+/g, '-')}-${width}-${scheme}.png`), fullPage: true });
        for (const o of await overflows(page)) found.push(`${screen}: ${o}`);
      }
      assert.deepEqual(found, [], `nothing is wider than the ${width} px window`);
      assert.deepEqual(errors, [], 'no console errors or CSP violations');
      await context.close();
    });
  }
}
