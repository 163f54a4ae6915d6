// An OAuth authorization server for remote MCP servers, for Latchkey's MCP OAuth client tests: a
// real oidc-provider 9 on 127.0.0.1 with open Dynamic Client Registration (RFC 7591), resource
// indicators (RFC 8707) issuing JWT access tokens whose `aud` is the requested MCP server URL,
// rotating refresh tokens for every client allowed the refresh_token grant, PKCE S256, `iss` in
// the authorization response (RFC 9207), and the sandbox's sign-in page. Dev/test tooling only.
//
//   node mcp-auth-server.js '<json options>'
// prints {"url": "<issuer>"} when ready and exits when stdin closes (or on SIGTERM/SIGINT).
import http from 'node:http';
import { URLSearchParams, fileURLToPath } from 'node:url';
import Provider from 'oidc-provider';
import { DEFAULT_USERS } from './idp.js';
import { errorPage, readBody, signInPage } from './pages.js';

/** The scopes an MCP server behind this AS may ask for. */
export const MCP_SCOPES = ['mcp:tools', 'mcp:admin'];

const PAGE = { title: 'MCP sign-in', heading: 'Sign in to the sandbox MCP authorization server' };

/** A resource indicator this AS issues tokens for: an http(s) URL on loopback (the test MCP servers). */
function isLoopbackResource(resource) {
  try {
    const url = new URL(resource);
    return (url.protocol === 'http:' || url.protocol === 'https:')
      && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname) && !url.hash;
  } catch {
    return false;
  }
}

/**
 * Start the MCP authorization server.
 * `cimd` turns on oidc-provider's Client ID Metadata Document support (an https client_id is
 * fetched with `cimd.fetch`); `extraCounters` are reported with the others by /__stats;
 * `preRegistered` adds one client registered beforehand (a confidential one when it has a
 * `client_secret`; `application_type` native, so its loopback redirect URIs match any port),
 * allowed the authorization_code and refresh_token grants, and the token endpoint then takes
 * (and the metadata advertises) only `none` and that client's `token_endpoint_auth_method`.
 * Default: none.
 * @param {{port?: number, accessTtl?: number, refreshTtl?: number, users?: Record<string, {password: string}>, cimd?: {fetch: Function}, extraCounters?: object, preRegistered?: {client_id: string, client_secret?: string, redirect_uris: string[], token_endpoint_auth_method?: string}}} [options]
 * @returns {Promise<{issuer: string, close: () => Promise<void>, stats: () => object}>}
 */
export async function startMcpAuthServer({
  port = 0, accessTtl = 3600, refreshTtl = 86400, users = DEFAULT_USERS, cimd, extraCounters = {},
  preRegistered,
} = {}) {
  const counters = {
    registrations: 0,
    token_requests: 0,
    refresh_grants: 0,
    grants_revoked: 0,
    resources: [],
    // Successful grants whose client authenticated with a secret, by how it was sent
    // (oidc-provider itself takes either, whatever the client registered).
    client_secret_basic: 0,
    client_secret_post: 0,
  };
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const configuration = {
    clients: preRegistered ? [{
      application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: preRegistered.client_secret ? 'client_secret_basic' : 'none',
      ...preRegistered,
    }] : [],
    pkce: { required: () => true },
    ...(preRegistered ? {
      clientAuthMethods: ['none', preRegistered.token_endpoint_auth_method ?? 'client_secret_basic'],
    } : {}),
    scopes: ['openid', 'offline_access'],
    claims: { openid: ['sub'] },
    clientBasedCORS: () => true,
    // Refresh tokens for every client allowed the grant, without `offline_access` (MCP clients
    // ask for the server's scopes only).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    ttl: {
      AccessToken: accessTtl,
      AuthorizationCode: 60,
      Grant: refreshTtl,
      Interaction: 600,
      Session: refreshTtl,
      RefreshToken: refreshTtl,
    },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      revocation: { enabled: true },
      ...(cimd ? { clientIdMetadataDocument: { enabled: true, ack: 'draft-02' } } : {}),
      resourceIndicators: {
        enabled: true,
        // No default: a request without `resource` gets no MCP audience.
        defaultResource: (ctx, client, oneOf) => oneOf ?? undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (!isLoopbackResource(resource)) throw new Provider.errors.InvalidTarget();
          counters.resources.push(resource);
          return {
            scope: MCP_SCOPES.join(' '),
            audience: resource,
            accessTokenTTL: accessTtl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, id) => {
      if (!users[id]) return undefined;
      return { accountId: id, claims: async () => ({ sub: id }) };
    },
    ...(cimd ? { fetch: cimd.fetch } : {}),
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = errorPage(out);
    },
  };

  const provider = new Provider(issuer, configuration);
  provider.on('registration_create.success', () => { counters.registrations += 1; });
  // RFC 7009: revoking a refresh token revokes its whole grant (oidc-provider's default policy).
  provider.on('grant.revoked', () => { counters.grants_revoked += 1; });
  provider.on('grant.success', (ctx) => {
    if (ctx.oidc.params?.grant_type === 'refresh_token') counters.refresh_grants += 1;
    if (ctx.oidc.params?.client_secret) counters.client_secret_post += 1;
    else if (/^basic /i.test(ctx.headers.authorization ?? '')) counters.client_secret_basic += 1;
  });

  // Sign-in, then consent auto-granted for what was asked (scopes and resource scopes).
  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([^/]+)(\/login)?$/.exec(ctx.path);
    if (!m) return next();
    ctx.set('Cache-Control', 'no-store');
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { uid, prompt, params, session } = details;
    if (ctx.method === 'POST' && m[2]) {
      const form = new URLSearchParams(await readBody(ctx.req));
      const login = form.get('login') ?? '';
      const user = users[login];
      if (!user || user.password !== form.get('password')) {
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = signInPage(uid, { ...PAGE, error: 'Invalid login or password.' });
        return undefined;
      }
      await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
      ctx.respond = false;
      return undefined;
    }
    if (ctx.method !== 'GET') {
      ctx.status = 405;
      return undefined;
    }
    if (prompt.name === 'login') {
      ctx.type = 'html';
      ctx.body = signInPage(uid, PAGE);
      return undefined;
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session?.accountId, clientId: params.client_id });
    const d = prompt.details ?? {};
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    if (d.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    await provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    ctx.respond = false;
    return undefined;
  });

  provider.use(async (ctx, next) => {
    if (ctx.path === '/__stats' && ctx.method === 'GET') {
      ctx.body = { ...counters, ...extraCounters };
      return undefined;
    }
    if (ctx.path === '/token' && ctx.method === 'POST') counters.token_requests += 1;
    return next();
  });

  server.on('request', provider.callback());

  return {
    issuer,
    stats: () => ({ ...counters, ...extraCounters }),
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const options = JSON.parse(process.argv[2] ?? '{}');
  const started = await startMcpAuthServer(options);
  const stop = async () => {
    await started.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
  process.stdout.write(`${JSON.stringify({ url: started.issuer })}\n`);
}
