// The CIMD authorization server (cimd-auth-server.js): it advertises Client ID Metadata
// Documents, fetches Latchkey's document over HTTPS from its throwaway server, and accepts an
// authorization request only for that client_id and a redirect URI the document lists.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startCimdAuthServer } from '../cimd-auth-server.js';

const authorize = (issuer, clientId, redirectUri) => {
  const url = new URL('/auth', issuer);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirectUri,
    code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    code_challenge_method: 'S256',
    state: 'xyz',
    scope: 'mcp:tools',
    resource: 'http://127.0.0.1:9/mcp',
  }).toString();
  return fetch(url, { redirect: 'manual' });
};

test('advertises CIMD and takes the published document as the client', async (t) => {
  const as = await startCimdAuthServer();
  t.after(() => as.close());
  const meta = await (await fetch(`${as.issuer}/.well-known/oauth-authorization-server`)).json();
  assert.equal(meta.client_id_metadata_document_supported, true);
  assert.ok(as.documentUrl.startsWith('https://127.0.0.1:'));

  const ok = await authorize(as.issuer, as.documentUrl, 'http://127.0.0.1:43210/oauth/callback');
  assert.equal(ok.status, 303, 'on to the sign-in');
  assert.match(ok.headers.get('location'), /\/interaction\//);
  assert.ok(as.stats().document_fetches >= 1, 'fetched over HTTPS');

  const wrongRedirect = await authorize(as.issuer, as.documentUrl, 'http://127.0.0.1:43210/elsewhere');
  assert.equal(wrongRedirect.status, 400, 'a redirect URI the document does not list is refused');
  assert.equal(as.stats().registrations, 0, 'no dynamic registration');
});

test('refuses a document whose client_id is not its URL', async (t) => {
  const as = await startCimdAuthServer({ keepClientId: true });
  t.after(() => as.close());
  const answer = await authorize(as.issuer, as.documentUrl, 'http://127.0.0.1:43210/oauth/callback');
  assert.equal(answer.status, 400);
  assert.ok(as.stats().document_fetches >= 1);
});
