// The sandbox IdP's provider-like variants, each checked at the real oidc-provider: access
// tokens addressed to an API, with an empty audience, or opaque; no, static or rotating refresh
// tokens; refresh answers without an id token or refresh token; confidential native clients.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { decodeJwt } from 'jose';
import { startIdp } from '../idp.js';

const b64url = (buf) => buf.toString('base64url');
const REDIRECT = 'http://127.0.0.1:53682/oauth/callback';

/** How a client authenticates at the token and revocation endpoints. */
function clientAuth(clientId, secret, method) {
  if (method === 'client_secret_basic') {
    const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64');
    return { headers: { authorization: `Basic ${basic}` }, form: {} };
  }
  if (method === 'client_secret_post') return { headers: {}, form: { client_id: clientId, client_secret: secret } };
  return { headers: {}, form: { client_id: clientId } };
}

async function post(idp, path, form, auth) {
  const res = await fetch(`${idp.issuer}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...auth.headers },
    body: new URLSearchParams({ ...form, ...auth.form }).toString(),
  });
  return { status: res.status, body: await res.json().catch(() => ({})) };
}

/** Drive authorize → sign-in → consent → code exchange with a cookie jar; returns the answer. */
async function login(idp, { clientId = 'latchkey', auth = clientAuth('latchkey') } = {}) {
  const verifier = b64url(randomBytes(32));
  const authorize = new URL(`${idp.issuer}/auth`);
  authorize.search = new URLSearchParams({
    client_id: clientId,
    response_type: 'code',
    redirect_uri: REDIRECT,
    scope: 'openid profile email offline_access',
    code_challenge: b64url(createHash('sha256').update(verifier).digest()),
    code_challenge_method: 'S256',
    state: 'st4te',
    nonce: 'n0nce',
    prompt: 'consent',
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
  let url = authorize.href;
  let res = await go(url);
  for (let hops = 0; hops < 10 && !url.startsWith(REDIRECT); hops += 1) {
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location'), url).href;
      if (!url.startsWith(REDIRECT)) res = await go(url);
    } else if (res.status === 200) {
      const action = /<form[^>]*action="([^"]+)"/.exec(await res.text())?.[1];
      assert.ok(action, 'the sign-in page has a form');
      url = new URL(action, url).href;
      res = await go(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ login: 'alice', password: 'alice-password' }).toString(),
      });
    } else {
      assert.fail(`unexpected ${res.status} at ${url}: ${await res.text()}`);
    }
  }
  const code = new URL(url).searchParams.get('code');
  assert.ok(code, `the callback carries a code: ${url}`);
  const answer = await post(idp, '/token', {
    grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier,
  }, auth);
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body;
}

const refresh = (idp, token, auth = clientAuth('latchkey')) => post(idp, '/token', { grant_type: 'refresh_token', refresh_token: token }, auth);

async function withIdp(options, fn) {
  const idp = await startIdp({ accessTtl: 120, refreshTtl: 600, ...options });
  try {
    await fn(idp);
  } finally {
    await idp.close();
  }
}

test('by default the access token is a JWT for the API, not the client, and refresh returns an id token', () => withIdp({}, async (idp) => {
  const tokens = await login(idp);
  assert.equal(decodeJwt(tokens.access_token).aud, 'latchkey-gateway', 'no resource asked for: the default API');
  assert.equal(decodeJwt(tokens.id_token).aud, 'latchkey');
  const r = await refresh(idp, tokens.refresh_token);
  assert.equal(r.status, 200);
  assert.ok(r.body.id_token, 'oidc-provider returns an id token on refresh when the grant has openid');
  assert.equal(decodeJwt(r.body.id_token).sub, 'alice');
  assert.equal(idp.stats().refresh_id_tokens, 1, 'counted');
  assert.notEqual(r.body.refresh_token, tokens.refresh_token, 'rotating by default');
}));

test('an empty-audience JWT access token is what oidc-provider allows closest to no aud', () => withIdp({ accessTokenFormat: 'jwt-empty-aud' }, async (idp) => {
  const tokens = await login(idp);
  assert.deepEqual(decodeJwt(tokens.access_token).aud, []);
}));

test('opaque access tokens are not JWTs', () => withIdp({ accessTokenFormat: 'opaque' }, async (idp) => {
  const tokens = await login(idp);
  assert.equal(tokens.access_token.split('.').length, 1, 'opaque');
  assert.equal(tokens.expires_in, 120);
}));

test('refreshTokens none issues no refresh token', () => withIdp({ refreshTokens: 'none' }, async (idp) => {
  const tokens = await login(idp);
  assert.equal(tokens.refresh_token, undefined);
  assert.ok(tokens.id_token);
}));

test('static refresh tokens come back unchanged and stay valid', () => withIdp({ refreshTokens: 'static' }, async (idp) => {
  const tokens = await login(idp);
  const r1 = await refresh(idp, tokens.refresh_token);
  assert.equal(r1.body.refresh_token, tokens.refresh_token);
  const r2 = await refresh(idp, tokens.refresh_token);
  assert.equal(r2.status, 200, 'the same token works again');
}));

test('refresh answers can leave out the id token, the refresh token and expires_in', () => withIdp({
  refreshTokens: 'static', refreshIdToken: false, refreshOmitsRefreshToken: true, omitExpiresIn: true,
}, async (idp) => {
  const tokens = await login(idp);
  assert.equal(tokens.expires_in, undefined);
  assert.ok(tokens.refresh_token, 'the login answer keeps its refresh token');
  const r = await refresh(idp, tokens.refresh_token);
  assert.equal(r.status, 200);
  assert.equal(r.body.id_token, undefined);
  assert.equal(idp.stats().refresh_id_tokens, 0, 'not counted when dropped');
  assert.equal(r.body.refresh_token, undefined);
  assert.ok(r.body.access_token);
  assert.equal((await refresh(idp, tokens.refresh_token)).status, 200, 'the old one still works');
}));

for (const method of ['client_secret_basic', 'client_secret_post']) {
  const clientId = method === 'client_secret_basic' ? 'latchkey-basic' : 'latchkey-post';
  test(`the confidential native client ${clientId} needs its secret (${method})`, () => withIdp({ clientSecret: 's3cret' }, async (idp) => {
    const auth = clientAuth(clientId, 's3cret', method);
    const tokens = await login(idp, { clientId, auth });
    const missing = await refresh(idp, tokens.refresh_token, clientAuth(clientId));
    assert.equal(missing.status, 401);
    assert.equal(missing.body.error, 'invalid_client');
    const wrong = await refresh(idp, tokens.refresh_token, clientAuth(clientId, 'nope', method));
    assert.equal(wrong.body.error, 'invalid_client');
    const ok = await refresh(idp, tokens.refresh_token, auth);
    assert.equal(ok.status, 200);
    const revoked = await post(idp, '/token/revocation', { token: ok.body.refresh_token, token_type_hint: 'refresh_token' }, auth);
    assert.equal(revoked.status, 200);
    assert.equal((await refresh(idp, ok.body.refresh_token, auth)).body.error, 'invalid_grant');
  }));
}

test('the advertised client authentication methods can be narrowed', () => withIdp({ clientAuthMethods: ['none', 'client_secret_post'] }, async (idp) => {
  const doc = await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json();
  assert.deepEqual(doc.token_endpoint_auth_methods_supported, ['none', 'client_secret_post']);
}));
