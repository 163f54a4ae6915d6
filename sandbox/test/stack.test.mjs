// End-to-end checks of the sandbox: a full browser-like login over HTTP, token rotation and
// revocation at the real oidc-provider, the gateway double's answers and the upstream echo.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { decodeJwt } from 'jose';
import { startIdp } from '../idp.js';
import { startGateway } from '../gateway.js';
import { startUpstream } from '../upstream.js';

const b64url = (buf) => buf.toString('base64url');
let idp;
let gateway;
let upstream;

before(async () => {
  idp = await startIdp({ accessTtl: 120, refreshTtl: 600 });
  gateway = await startGateway({
    issuer: idp.issuer,
    apiKey: 'test-gw-key',
    credentials: [{ user: 'alice', service: 'demo', name: 'api_key', value: 'demo-secret' }],
    forbidden: [{ user: 'alice', service: 'locked' }],
  });
  upstream = await startUpstream({ expectKey: 'demo-secret' });
});

after(async () => {
  await Promise.all([idp.close(), gateway.close(), upstream.close()]);
});

/** Drive authorize → sign-in → consent → loopback redirect with a cookie jar; returns tokens. */
async function login(user = 'alice', password = `${user}-password`) {
  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash('sha256').update(verifier).digest());
  const redirectUri = 'http://127.0.0.1:53682/oauth/callback';
  const auth = new URL(`${idp.issuer}/auth`);
  auth.search = new URLSearchParams({
    client_id: 'latchkey',
    response_type: 'code',
    redirect_uri: redirectUri,
    scope: 'openid profile email offline_access',
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: 'st4te',
    prompt: 'consent',
    resource: 'latchkey-gateway',
  }).toString();
  const jar = new Map();
  const go = async (url, init = {}) => {
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers ?? {}), cookie } });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      jar.set(pair.slice(0, i), pair.slice(i + 1));
    }
    return res;
  };
  let url = auth.href;
  let res = await go(url);
  for (let hops = 0; hops < 10; hops += 1) {
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location'), url).href;
      if (url.startsWith(redirectUri)) break;
      res = await go(url);
    } else if (res.status === 200) {
      const html = await res.text();
      const action = /<form[^>]*action="([^"]+)"/.exec(html)?.[1];
      assert.ok(action, 'the sign-in page has a form');
      url = new URL(action, url).href;
      res = await go(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ login: user, password }).toString(),
      });
    } else {
      assert.fail(`unexpected ${res.status} at ${url}: ${await res.text()}`);
    }
  }
  const cb = new URL(url);
  assert.equal(cb.searchParams.get('state'), 'st4te');
  const code = cb.searchParams.get('code');
  assert.ok(code, `callback carries a code (${cb.searchParams.get('error')})`);
  const tok = await fetch(`${idp.issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code, redirect_uri: redirectUri, client_id: 'latchkey', code_verifier: verifier,
    }).toString(),
  });
  const body = await tok.json();
  assert.equal(tok.status, 200, JSON.stringify(body.error));
  return body;
}

const refresh = (refreshToken) => fetch(`${idp.issuer}/token`, {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'latchkey' }).toString(),
});

test('discovery advertises the endpoints Latchkey needs', async () => {
  const res = await fetch(`${idp.issuer}/.well-known/openid-configuration`);
  const doc = await res.json();
  assert.equal(doc.issuer, idp.issuer);
  assert.deepEqual(doc.code_challenge_methods_supported, ['S256']);
  assert.ok(doc.revocation_endpoint, 'revocation is enabled');
  assert.ok(doc.jwks_uri);
});

test('a full login yields a gateway JWT and a rotating refresh token; revocation ends it', async () => {
  const tokens = await login();
  const claims = decodeJwt(tokens.access_token);
  assert.equal(claims.aud, 'latchkey-gateway');
  assert.equal(claims.sub, 'alice');
  assert.equal(claims.iss, idp.issuer);
  assert.ok(claims.exp - claims.iat <= 120, 'access TTL honoured');
  assert.ok(tokens.refresh_token, 'a refresh token is issued');
  assert.ok(tokens.id_token, 'an id token is issued');

  const before = idp.stats();
  const r1 = await refresh(tokens.refresh_token);
  const t1 = await r1.json();
  assert.equal(r1.status, 200);
  assert.notEqual(t1.refresh_token, tokens.refresh_token, 'refresh tokens rotate');
  assert.equal(decodeJwt(t1.access_token).aud, 'latchkey-gateway');
  assert.equal(idp.stats().refresh_grants, before.refresh_grants + 1);

  const rev = await fetch(`${idp.issuer}/token/revocation`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: t1.refresh_token, client_id: 'latchkey' }).toString(),
  });
  assert.equal(rev.status, 200);
  const r2 = await refresh(t1.refresh_token);
  assert.equal(r2.status, 400);
  assert.equal((await r2.json()).error, 'invalid_grant');
  const stats = await (await fetch(`${idp.issuer}/__stats`)).json();
  assert.equal(stats.revocations, 1);
  assert.ok(stats.token_requests >= 3);
});

test('while told to drop token requests, the IdP closes their connections without an answer', async () => {
  const tokenRequest = () => fetch(`${idp.issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'unknown', client_id: 'latchkey' }).toString(),
  });
  assert.equal((await fetch(`${idp.issuer}/__drop-token`, { method: 'POST' })).status, 204);
  await assert.rejects(tokenRequest(), TypeError, 'no answer: the connection is closed');
  assert.equal((await (await fetch(`${idp.issuer}/__stats`)).json()).dropped_token_requests, 1);
  assert.equal((await fetch(`${idp.issuer}/__release-token`, { method: 'POST' })).status, 204);
  const answered = await tokenRequest();
  assert.equal(answered.status, 400, 'answered again (the unknown refresh token is refused)');
  assert.equal((await answered.json()).error, 'invalid_grant');
});

test('a wrong password keeps the user on the sign-in page', async () => {
  // Refused by the sign-in page itself (401, the form shown again with the reason), not by a
  // provider that is down (fetch fails) or broken (another status): those must fail this test.
  await assert.rejects(login('alice', 'nope'), (err) => {
    assert.ok(err instanceof assert.AssertionError, `a sign-in refusal, not ${err}`);
    assert.match(err.message, /^unexpected 401 at \S+\/login:/, 'the sign-in form answered 401');
    assert.match(err.message, /Invalid login or password\./, 'the page says why');
    assert.match(err.message, /<form method="post"/, 'and offers the form again');
    return true;
  });
  await login('alice');
});

test('the gateway answers 200/401/403/404 and scripted responses', async () => {
  const { access_token: at } = await login();
  const get = (service, headers) => fetch(`${gateway.url}/api/v1/credentials/${service}`, { headers });
  const ok = await get('demo', { 'x-api-key': 'test-gw-key', authorization: `Bearer ${at}` });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get('cache-control'), 'no-store');
  assert.deepEqual(await ok.json(), { data: { api_key: 'demo-secret' } });
  const badKey = await get('demo', { 'x-api-key': 'wrong', authorization: `Bearer ${at}` });
  assert.equal(badKey.status, 401);
  assert.deepEqual(await badKey.json(), { error: 'invalid_api_key' });
  assert.equal((await get('demo', { 'x-api-key': 'test-gw-key', authorization: 'Bearer nope' })).status, 401);
  assert.equal((await get('locked', { 'x-api-key': 'test-gw-key', authorization: `Bearer ${at}` })).status, 403);
  assert.equal((await get('other', { 'x-api-key': 'test-gw-key', authorization: `Bearer ${at}` })).status, 404);

  await fetch(`${gateway.url}/__script/demo`, { method: 'POST', body: JSON.stringify([{ status: 503, body: { error: 'unavailable' } }]) });
  assert.equal((await get('demo', {})).status, 503);
  assert.equal((await get('demo', { 'x-api-key': 'test-gw-key', authorization: `Bearer ${at}` })).status, 200);
  const stats = await (await fetch(`${gateway.url}/__stats`)).json();
  assert.equal(stats.requests, 7);
});

test('the upstream fingerprints what it received', async () => {
  const res = await fetch(`${upstream.url}/whoami?api_key=x&b=1`, { headers: { 'x-api-key': 'demo-secret' } });
  const body = await res.json();
  assert.equal(body.received['x-api-key_fp'], createHash('sha256').update('demo-secret').digest('hex').slice(0, 12));
  assert.equal(body.received.authorization, null);
  assert.equal(body.matches_expected, true);
  assert.deepEqual(body.query_keys, ['api_key', 'b']);
  const ev = await fetch(`${upstream.url}/events?n=2`, { headers: { 'last-event-id': '5' } });
  assert.equal(ev.headers.get('content-type'), 'text/event-stream');
  const text = await ev.text();
  assert.match(text, /id: 6\n/);
  assert.match(text, /id: 7\n/);
});
