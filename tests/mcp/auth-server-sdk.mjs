// A second make of MCP authorization server for Latchkey's tests: the official TypeScript SDK's
// authorization server router (`mcpAuthRouter`: RFC 8414 metadata, Dynamic Client Registration,
// PKCE S256, `resource`) with the SDK's own in-memory demo provider, which auto-approves (no
// sign-in page), issues opaque access tokens, matches redirect URIs exactly (port included),
// sends no `iss` in the authorization response and implements no refresh. Tokens are checked by
// the MCP server through `POST /introspect` (as the SDK's example does), which answers the
// token's `aud` (the resource it was issued for). Requests without a loopback `resource` are
// refused. Its first stdout line is {"url": "<issuer>"}; it exits when stdin closes.
import express from 'express';
import { mcpAuthRouter } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { DemoInMemoryAuthProvider } from '@modelcontextprotocol/sdk/examples/server/demoInMemoryOAuthProvider.js';

const loopbackResource = (resource) => {
  if (!resource) return false;
  const url = new URL(resource);
  return ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname) && !url.hash;
};
const provider = new DemoInMemoryAuthProvider(loopbackResource);

const app = express();
const server = await new Promise((resolve, reject) => {
  const s = app.listen(0, '127.0.0.1', () => resolve(s));
  s.once('error', reject);
});
const issuerUrl = new URL(`http://127.0.0.1:${server.address().port}/`);
app.use(express.json());
app.use(express.urlencoded());
app.use(mcpAuthRouter({ provider, issuerUrl, scopesSupported: ['mcp:tools', 'mcp:admin'] }));
app.post('/introspect', async (req, res) => {
  try {
    const info = await provider.verifyAccessToken(String(req.body?.token ?? ''));
    res.json({ active: true, client_id: info.clientId, scope: info.scopes.join(' '), exp: info.expiresAt, aud: info.resource?.href });
  } catch {
    res.json({ active: false });
  }
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
process.stdout.write(`${JSON.stringify({ url: issuerUrl.href })}\n`);
