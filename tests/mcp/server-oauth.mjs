// An MCP server over Streamable HTTP (official SDK, stateless) on 127.0.0.1 that requires an
// OAuth bearer token from an authorization server (--issuer): the token must be a JWT signed by
// the issuer's JWKS, with `aud` equal to this server's URL and the scope `mcp:tools`. It serves
// its RFC 9728 protected-resource metadata with the SDK's helpers and answers 401 with the SDK's
// `WWW-Authenticate: Bearer ... resource_metadata="..."` challenge. `POST /admin/mcp` is the
// same server demanding the scope `mcp:admin` too (403 insufficient_scope: a step-up). With
// --introspect the tokens are opaque and checked at the issuer's `POST /introspect` instead
// (auth-server-sdk.mjs), whose `aud` must be this server's URL.
// Its first stdout line is {"url": "http://127.0.0.1:<port>/mcp"}; it exits when stdin closes.
import { parseArgs } from 'node:util';
import express from 'express';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { mcpAuthMetadataRouter, getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { registerTools } from './tools.mjs';

const { values } = parseArgs({ options: { port: { type: 'string', default: '0' }, issuer: { type: 'string' }, introspect: { type: 'boolean', default: false } } });
if (!values.issuer) {
  process.stderr.write('--issuer is required\n');
  process.exit(2);
}
const issuer = values.issuer;
const base = issuer.replace(/\/$/, '');
const discovered = async () => {
  for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
    const answer = await fetch(`${base}${path}`);
    if (answer.ok) return answer.json();
  }
  throw new Error(`no authorization server metadata at ${issuer}`);
};
const oauthMetadata = await discovered();
const jwks = values.introspect ? undefined : createRemoteJWKSet(new URL(oauthMetadata.jwks_uri));

const app = express();
const server = await new Promise((resolve, reject) => {
  const s = app.listen(Number(values.port), '127.0.0.1', () => resolve(s));
  s.once('error', reject);
});
const resource = new URL(`http://127.0.0.1:${server.address().port}/mcp`);

const introspected = async (token) => {
  const answer = await fetch(`${base}/introspect`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token }) });
  const info = await answer.json();
  if (!info.active) throw new InvalidTokenError('token rejected: inactive');
  if (info.aud !== resource.href) throw new InvalidTokenError('token rejected: issued for another resource');
  return { token, clientId: String(info.client_id ?? ''), scopes: String(info.scope ?? '').split(' ').filter(Boolean), expiresAt: info.exp, resource, extra: {} };
};

const verifier = {
  async verifyAccessToken(token) {
    if (values.introspect) return introspected(token);
    try {
      const { payload } = await jwtVerify(token, jwks, { issuer, audience: resource.href });
      return {
        token,
        clientId: String(payload.client_id ?? ''),
        scopes: String(payload.scope ?? '').split(' ').filter(Boolean),
        expiresAt: payload.exp,
        resource,
        extra: { sub: payload.sub },
      };
    } catch (e) {
      throw new InvalidTokenError(`token rejected: ${e.code ?? 'invalid'}`);
    }
  },
};

app.use(mcpAuthMetadataRouter({ oauthMetadata, resourceServerUrl: resource, scopesSupported: ['mcp:tools'], resourceName: 'Latchkey OAuth test server' }));

const serveMcp = async (req, res) => {
  try {
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    const mcp = new McpServer({ name: 'latchkey-test-oauth', version: '1.0.0' });
    registerTools(mcp, { whoami: () => ({ subject: req.auth?.extra?.sub, scopes: req.auth?.scopes }) });
    res.on('close', () => { transport.close(); mcp.close(); });
    await mcp.connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (e) {
    process.stderr.write(`server-oauth: ${e?.message ?? e}\n`);
    if (!res.headersSent) res.status(500).end();
  }
};
const resourceMetadataUrl = getOAuthProtectedResourceMetadataUrl(resource);
const auth = (requiredScopes) => requireBearerAuth({ verifier, requiredScopes, resourceMetadataUrl, expectedResource: resource });
app.post('/mcp', express.json(), auth(['mcp:tools']), serveMcp);
app.post('/admin/mcp', express.json(), auth(['mcp:tools', 'mcp:admin']), serveMcp);
app.all(['/mcp', '/admin/mcp'], (req, res) => res.status(405).set('Allow', 'POST').end());

process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
process.stdout.write(`${JSON.stringify({ url: resource.href })}\n`);
