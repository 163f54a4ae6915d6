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

test('the Activity chart draws requests and errors per service from the seeded audit log, under the CSP', async () => {
  const { page, context, errors } = await chrome.open({ width: 440 });
  await show(page, 'Activity');
  const totals = page.getByTestId('activity-totals');
  // The mock's audit log: 60 requests in the last 30 minutes, alternating demo/github, with
  // 8 (demo) and 23 (github) answered 4xx/5xx.
  await page.waitForFunction(() => /github/.test(document.querySelector('[data-testid=activity-totals]')?.textContent ?? ''));
  assert.equal(await totals.innerText(), 'demo: 30 requests, 8 errors\ngithub: 30 requests, 23 errors');
  const chart = page.getByTestId('activity-chart');
  assert.match(await chart.getAttribute('aria-label'), /last hour: demo 30 requests, 8 errors; github 30 requests, 23 errors/);
  await chart.screenshot({ path: join(shots, 'activity-chart-hour.png') });
  // uPlot drew on its canvas: pixels in the services' colours (#4c6ef5, #12b886; the lines overlap
  // where both services had a request) and the error red.
  const painted = await page.evaluate(() => {
    const canvas = document.querySelector('[data-testid=activity-chart] canvas');
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let lines = 0;
    let red = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      if (a > 120 && ((b > 170 && r < 150 && g < 170) || (g > 150 && r < 90 && b > 100 && b < 170))) lines += 1;
      if (a > 120 && r > 170 && g < 90 && b < 90) red += 1;
    }
    return { lines, red, width: canvas.getBoundingClientRect().width };
  });
  assert.ok(painted.lines > 20, `the requests lines are drawn: ${JSON.stringify(painted)}`);
  assert.ok(painted.red > 20, `the errors line is drawn: ${JSON.stringify(painted)}`);
  assert.ok(painted.width <= 440, 'the chart fits the window');
  await page.getByRole('button', { name: 'Last day' }).click();
  await page.waitForFunction(() => /last day/.test(document.querySelector('[data-testid=activity-chart]')?.getAttribute('aria-label') ?? ''));
  assert.equal(await page.getByRole('button', { name: 'Last day' }).getAttribute('aria-pressed'), 'true');
  assert.equal(await totals.innerText(), 'demo: 30 requests, 8 errors\ngithub: 30 requests, 23 errors', 'the day holds the same hour');
  await page.screenshot({ path: join(shots, 'activity-440-light.png') });
  assert.deepEqual(errors, [], 'no console errors or CSP violations');
  await context.close();
});
