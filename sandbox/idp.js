// The sandbox identity provider: a real oidc-provider 9 on 127.0.0.1 with one public native
// client (`latchkey`, PKCE S256), rotating refresh tokens, JWT access tokens for the gateway
// audience, and a minimal sign-in page of our own. Dev/test tooling only, never shipped.
import http from 'node:http';
import { URLSearchParams } from 'node:url';
import Provider from 'oidc-provider';

/** The resource identifier oidc-provider needs (an absolute URI) for the audience `latchkey-gateway`. */
const RESOURCE_URI = 'urn:latchkey-gateway';
const AUDIENCE = 'latchkey-gateway';
const SCOPES = ['openid', 'profile', 'email', 'offline_access'];

export const DEFAULT_USERS = {
  alice: { password: 'alice-password', name: 'Alice Example', email: 'alice@example.test' },
  bob: { password: 'bob-password', name: 'Bob Example', email: 'bob@example.test' },
};

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
})[c]);

function signInPage(uid, error) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox sign-in</title></head>
<body>
<main>
<h1>Sign in to the Latchkey sandbox</h1>
${error ? `<p role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<label for="login">Login</label> <input id="login" name="login" type="text" required autofocus>
<label for="password">Password</label> <input id="password" name="password" type="password" required>
<button type="submit">Sign in</button>
</form>
</main>
</body></html>`;
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/** Map `resource=latchkey-gateway` (our audience name) to the URI oidc-provider requires. */
function rewriteResource(params) {
  const values = params.getAll('resource');
  if (!values.length) return false;
  params.delete('resource');
  for (const v of values) params.append('resource', v === AUDIENCE ? RESOURCE_URI : v);
  return true;
}

/**
 * Start the sandbox IdP.
 * @param {{port?: number, accessTtl?: number, refreshTtl?: number, users?: Record<string, {password: string, name?: string, email?: string}>}} [options]
 * @returns {Promise<{issuer: string, close: () => Promise<void>, stats: () => {token_requests: number, refresh_grants: number, revocations: number}}>}
 */
export async function startIdp({ port = 0, accessTtl = 3600, refreshTtl = 86400, users = DEFAULT_USERS } = {}) {
  const counters = { token_requests: 0, refresh_grants: 0, revocations: 0 };
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const configuration = {
    clients: [{
      client_id: 'latchkey',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/oauth/callback'],
    }],
    pkce: { required: () => true },
    scopes: SCOPES,
    claims: { openid: ['sub'], profile: ['name'], email: ['email'] },
    clientBasedCORS: () => true,
    // Put the profile and email claims in the id token itself, as most enterprise IdPs do.
    conformIdTokenClaims: false,
    issueRefreshToken: async () => true,
    rotateRefreshToken: true,
    ttl: {
      AccessToken: accessTtl,
      AuthorizationCode: 60,
      IdToken: accessTtl,
      Grant: refreshTtl,
      Interaction: 600,
      Session: refreshTtl,
      RefreshToken: refreshTtl,
    },
    features: {
      devInteractions: { enabled: false },
      revocation: {
        enabled: true,
        // The one public client may revoke its own tokens only.
        allowedPolicy: async (ctx, client, token) => token.clientId === client.clientId,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE_URI,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (resource !== RESOURCE_URI) {
            throw new Provider.errors.InvalidTarget();
          }
          return {
            scope: 'gateway',
            audience: AUDIENCE,
            accessTokenTTL: accessTtl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (ctx, id) => {
      const user = users[id];
      if (!user) return undefined;
      return {
        accountId: id,
        claims: async () => ({ sub: id, name: user.name ?? id, email: user.email ?? `${id}@example.test` }),
      };
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Error</title></head><body><h1>${escapeHtml(out.error)}</h1><p>${escapeHtml(out.error_description ?? '')}</p></body></html>`;
    },
  };

  const provider = new Provider(issuer, configuration);
  provider.on('grant.success', (ctx) => {
    if (ctx.oidc.params?.grant_type === 'refresh_token') counters.refresh_grants += 1;
  });

  // Sign-in and consent: our own interaction routes.
  provider.use(async (ctx, next) => {
    const m = /^\/interaction\/([^/]+)(\/login)?$/.exec(ctx.path);
    if (!m) return next();
    ctx.set('Cache-Control', 'no-store');
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    const { uid, prompt, params, session } = details;
    if (ctx.method === 'POST' && m[2]) {
      const form = new URLSearchParams(ctx.req.body ?? '');
      const login = form.get('login') ?? '';
      const user = users[login];
      if (!user || user.password !== form.get('password')) {
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = signInPage(uid, 'Invalid login or password.');
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
      ctx.body = signInPage(uid);
      return undefined;
    }
    // Consent: auto-granted for the requested scopes and resource.
    const accountId = session?.accountId;
    let grant;
    if (details.grantId) {
      grant = await provider.Grant.find(details.grantId);
    } else {
      grant = new provider.Grant({ accountId, clientId: params.client_id });
    }
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

  // The sandbox-only debug endpoint.
  provider.use(async (ctx, next) => {
    if (ctx.path === '/__stats' && ctx.method === 'GET') {
      ctx.body = { ...counters };
      return undefined;
    }
    return next();
  });

  const callback = provider.callback();
  server.on('request', async (req, res) => {
    try {
      const url = new URL(req.url, issuer);
      if (req.method === 'POST' && (url.pathname === '/token' || url.pathname === '/token/revocation' || url.pathname.startsWith('/interaction/'))) {
        let body = await readBody(req);
        if (url.pathname === '/token') {
          counters.token_requests += 1;
          const params = new URLSearchParams(body);
          if (rewriteResource(params)) body = params.toString();
        } else if (url.pathname === '/token/revocation') {
          counters.revocations += 1;
        }
        req.body = body;
      } else if (url.pathname === '/auth') {
        const params = url.searchParams;
        if (rewriteResource(params)) req.url = `${url.pathname}?${params.toString()}`;
      }
      callback(req, res);
    } catch {
      res.statusCode = 400;
      res.end();
    }
  });

  return {
    issuer,
    stats: () => ({ ...counters }),
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}
