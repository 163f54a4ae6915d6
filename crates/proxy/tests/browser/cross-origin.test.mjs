// A web page from another origin (http://127.0.0.2:PORT) tries every way a browser offers to use
// a running Latchkey proxy with a valid client token: CORS fetches (preflighted and simple),
// no-cors fetches, a form POST and an <img>. None may read an answer, and no answer the browser
// saw carries a CORS header. A DNS-rebinding page (a foreign name resolved to 127.0.0.1, so the
// page is "same-origin" with the proxy) is refused by the Host gate. The Rust test that runs this
// file checks that the upstream behind the proxy received nothing.
//
// Run by crates/proxy/tests/it/browser.rs with LATCHKEY_PROXY_URL and LATCHKEY_CLIENT_TOKEN set.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { chromium } from 'playwright-core';

const proxyUrl = required('LATCHKEY_PROXY_URL');
const token = required('LATCHKEY_CLIENT_TOKEN');
const target = `${proxyUrl}/demo/echo`;
const proxyPort = new URL(proxyUrl).port;
/** A name only this browser resolves, to the proxy's address: DNS rebinding, simulated. */
const REBIND_HOST = 'rebind.latchkey.test';

const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  `--host-resolver-rules=MAP ${REBIND_HOST} ${new URL(proxyUrl).hostname}`,
];

/** Every response from the proxy the browser saw at the network level, with its headers. */
const seen = [];

let server;
let browser;
let page;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set (this file is run by the proxy's Rust tests)`);
  return value;
}

before(async () => {
  server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><meta charset="utf-8"><title>another origin</title><body></body>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.2', resolve));
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_FLAGS,
  });
  page = await browser.newPage();
  page.on('response', async (response) => {
    if (new URL(response.url()).port === proxyPort) {
      seen.push({ url: response.url(), status: response.status(), headers: await response.allHeaders() });
    }
  });
  await page.goto(`http://127.0.0.2:${server.address().port}/`);
});

after(async () => {
  await browser?.close();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()));
});

async function attempt(fn, args) {
  return page.evaluate(fn, args);
}

test('a fetch carrying the token in a header is stopped at the preflight', async () => {
  const result = await attempt(
    async ({ target, token }) => {
      try {
        const r = await fetch(target, { headers: { 'X-Latchkey-Client': token } });
        return { read: true, status: r.status, body: await r.text() };
      } catch (e) {
        return { read: false, error: String(e) };
      }
    },
    { target, token },
  );
  assert.equal(result.read, false, `the page must not read an answer: ${JSON.stringify(result)}`);
});

test('a simple CORS POST with the token in the body cannot read the answer', async () => {
  const result = await attempt(
    async ({ target, token }) => {
      try {
        const r = await fetch(target, {
          method: 'POST',
          headers: { 'content-type': 'text/plain' },
          body: `X-Latchkey-Client: ${token}`,
        });
        return { read: true, status: r.status, body: await r.text() };
      } catch (e) {
        return { read: false, error: String(e) };
      }
    },
    { target, token },
  );
  assert.equal(result.read, false, `the page must not read an answer: ${JSON.stringify(result)}`);
});

test('no-cors fetches only ever see an opaque response', async () => {
  const results = await attempt(
    async ({ target, token }) => {
      const out = [];
      for (const init of [
        { mode: 'no-cors' },
        { mode: 'no-cors', method: 'POST', body: token },
        { mode: 'no-cors', method: 'POST', body: new URLSearchParams({ 'x-latchkey-client': token }) },
      ]) {
        try {
          const r = await fetch(`${target}?x-latchkey-client=${encodeURIComponent(token)}`, init);
          out.push({ type: r.type, status: r.status, body: await r.text() });
        } catch (e) {
          out.push({ type: 'error', error: String(e) });
        }
      }
      return out;
    },
    { target, token },
  );
  for (const r of results) {
    assert.ok(r.type === 'opaque' || r.type === 'error', `opaque or failed: ${JSON.stringify(r)}`);
    if (r.type === 'opaque') {
      assert.equal(r.status, 0);
      assert.equal(r.body, '', 'an opaque body is empty');
    }
  }
});

test('a form POST into a frame cannot be read back', async () => {
  const result = await attempt(
    async ({ target, token }) => {
      const frame = document.createElement('iframe');
      frame.name = 'sink';
      document.body.append(frame);
      const loaded = new Promise((resolve) => frame.addEventListener('load', resolve, { once: true }));
      const form = document.createElement('form');
      form.method = 'POST';
      form.action = target;
      form.target = 'sink';
      for (const [name, value] of [
        ['x-latchkey-client', token],
        ['authorization', `Bearer ${token}`],
      ]) {
        const input = document.createElement('input');
        input.name = name;
        input.value = value;
        form.append(input);
      }
      document.body.append(form);
      form.submit();
      await loaded;
      try {
        return { read: true, body: frame.contentDocument?.body?.innerText ?? null };
      } catch (e) {
        return { read: false, error: String(e) };
      }
    },
    { target, token },
  );
  assert.ok(!result.read || result.body === null, `the frame must not be readable: ${JSON.stringify(result)}`);
});

test('an <img> pointing at the proxy fails to load', async () => {
  const loaded = await attempt(
    async ({ target, token }) =>
      new Promise((resolve) => {
        const img = new Image();
        img.onload = () => resolve(true);
        img.onerror = () => resolve(false);
        img.src = `${target}?x-latchkey-client=${encodeURIComponent(token)}`;
      }),
    { target, token },
  );
  assert.equal(loaded, false);
});

test('a DNS-rebinding page on the proxy\'s own origin is refused by the Host gate', async () => {
  const rebound = await browser.newPage();
  try {
    const origin = `http://${REBIND_HOST}:${proxyPort}`;
    const landing = await rebound.goto(`${origin}/demo/echo`);
    assert.equal(landing?.status(), 403, 'the page itself is refused');
    const result = await rebound.evaluate(
      async ({ origin, token }) => {
        const r = await fetch(`${origin}/demo/echo`, { headers: { 'X-Latchkey-Client': token } });
        return { status: r.status, body: await r.json(), cors: [...r.headers.keys()].filter((k) => k.startsWith('access-control-')) };
      },
      { origin, token },
    );
    assert.equal(result.status, 403, JSON.stringify(result));
    assert.equal(result.body.error, 'forbidden_host', JSON.stringify(result));
    assert.deepEqual(result.cors, [], 'no CORS headers');
  } finally {
    await rebound.close();
  }
});

test('no answer from the proxy carried a CORS header', () => {
  assert.ok(seen.length > 0, 'the browser saw answers from the proxy');
  for (const response of seen) {
    const cors = Object.keys(response.headers).filter((k) => k.startsWith('access-control-'));
    assert.deepEqual(cors, [], `no CORS headers on ${JSON.stringify(response)}`);
  }
});
