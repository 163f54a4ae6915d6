// The sandbox identity provider: a real oidc-provider 9 on 127.0.0.1 with one public native
// client (`latchkey`, PKCE S256), rotating refresh tokens, JWT access tokens for the gateway
// audience, and a minimal sign-in page of our own; options make it behave like other providers
// (see `startIdp`), with two confidential native clients. Dev/test tooling only, never shipped.
import http from 'node:http';
import { URLSearchParams } from 'node:url';
import Provider from 'oidc-provider';
import { errorPage, readBody, signInPage } from './pages.js';

/** The resource identifier oidc-provider needs (an absolute URI) for the audience `latchkey-gateway`. */
const RESOURCE_URI = 'urn:latchkey-gateway';
const AUDIENCE = 'latchkey-gateway';
const SCOPES = ['openid', 'profile', 'email', 'offline_access'];
/** The secret of the confidential clients `latchkey-basic` and `latchkey-post` unless given. */
export const DEFAULT_CLIENT_SECRET = 'sandbox-client-secret';

export const DEFAULT_USERS = {
  alice: { password: 'alice-password', name: 'Alice Example', email: 'alice@example.test' },
  bob: { password: 'bob-password', name: 'Bob Example', email: 'bob@example.test' },
};

const PAGE = { title: 'Sandbox sign-in', heading: 'Sign in to the Latchkey sandbox' };

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
 *
 * The options after `users` make it behave like the big providers do (defaults: as before):
 * - `accessTokenFormat`: `'jwt'` (a JWT addressed to the API `latchkey-gateway`, never to the
 *   client, whether or not a `resource` is asked for, like Okta and Auth0), `'jwt-empty-aud'` (a
 *   JWT with `"aud": []`: oidc-provider 9 refuses to sign a JWT access token with no `aud` at all,
 *   even after its JWT customizer, so an empty list is the nearest it allows), or `'opaque'`.
 * - `refreshTokens`: `'rotate'` (a new refresh token on each refresh), `'static'` (the same one
 *   is returned each time), `'none'` (no refresh token at all, as when `offline_access` is not
 *   granted).
 * - `refreshIdToken`: `false` drops the id token from refresh answers (oidc-provider returns one
 *   whenever the grant has `openid`).
 * - `refreshOmitsRefreshToken`: `true` drops `refresh_token` from refresh answers, as Google does
 *   (use with `refreshTokens: 'static'`: the old one stays valid).
 * - `omitExpiresIn`: `true` drops `expires_in` from every token answer.
 * - `clientSecret`: the secret of the confidential native clients `latchkey-basic`
 *   (`client_secret_basic`) and `latchkey-post` (`client_secret_post`).
 * - `clientAuthMethods`: the token endpoint authentication methods advertised and accepted.
 * @param {{port?: number, accessTtl?: number, refreshTtl?: number, users?: Record<string, {password: string, name?: string, email?: string}>, accessTokenFormat?: 'jwt' | 'jwt-empty-aud' | 'opaque', refreshTokens?: 'rotate' | 'static' | 'none', refreshIdToken?: boolean, refreshOmitsRefreshToken?: boolean, omitExpiresIn?: boolean, clientSecret?: string, clientAuthMethods?: string[]}} [options]
 * @returns {Promise<{issuer: string, close: () => Promise<void>, stats: () => {token_requests: number, refresh_grants: number, revocations: number, refresh_id_tokens: number}}>}
 */
export async function startIdp({
  port = 0, accessTtl = 3600, refreshTtl = 86400, users = DEFAULT_USERS,
  accessTokenFormat = 'jwt', refreshTokens = 'rotate', refreshIdToken = true,
  refreshOmitsRefreshToken = false, omitExpiresIn = false,
  clientSecret = DEFAULT_CLIENT_SECRET, clientAuthMethods,
} = {}) {
  if (!['jwt', 'jwt-empty-aud', 'opaque'].includes(accessTokenFormat)) {
    throw new Error(`accessTokenFormat must be jwt, jwt-empty-aud or opaque, not ${accessTokenFormat}`);
  }
  if (!['rotate', 'static', 'none'].includes(refreshTokens)) {
    throw new Error(`refreshTokens must be rotate, static or none, not ${refreshTokens}`);
  }
  const counters = { token_requests: 0, refresh_grants: 0, revocations: 0, refresh_id_tokens: 0, held_token_requests: 0, abandoned_token_requests: 0, dropped_token_requests: 0 };
  // Fault tests: while `hold` is set, token requests wait (counted) until `POST /__release-token`;
  // one whose client has gone meanwhile is dropped unprocessed (a kill mid-refresh), or, after
  // `POST /__hold-token?abandoned=process`, processed all the same, as a slow provider does that
  // never notices its client gave up (its refresh token is rotated; the answer goes nowhere). While
  // `dropping` is set (`POST /__drop-token`), token requests get their connection closed without
  // an answer, as from a provider behind a failing proxy (counted), until `/__release-token`.
  let hold = null;
  let dropping = false;
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
    },
    // Confidential native clients, as Google registers desktop apps (the secret is not really
    // secret there, but the token and revocation endpoints require it).
    ...['client_secret_basic', 'client_secret_post'].map((method) => ({
      client_id: method === 'client_secret_basic' ? 'latchkey-basic' : 'latchkey-post',
      client_secret: clientSecret,
      application_type: 'native',
      token_endpoint_auth_method: method,
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/oauth/callback'],
    })),
    // Misconfigured public clients, for the tests of what a failed login says. Registered with
    // another redirect URI, so the provider refuses Latchkey's:
    {
      client_id: 'latchkey-wrong-redirect',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/elsewhere/callback'],
    },
    // Allowed only `openid email`, so asking for `profile` is `invalid_scope`:
    {
      client_id: 'latchkey-narrow-scope',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/oauth/callback'],
      scope: 'openid email',
    }],
    ...(clientAuthMethods ? { clientAuthMethods } : {}),
    pkce: { required: () => true },
    scopes: SCOPES,
    claims: { openid: ['sub'], profile: ['name'], email: ['email'] },
    clientBasedCORS: () => true,
    // Put the profile and email claims in the id token itself, as most enterprise IdPs do.
    conformIdTokenClaims: false,
    issueRefreshToken: async () => refreshTokens !== 'none',
    rotateRefreshToken: refreshTokens === 'rotate',
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
            accessTokenFormat: accessTokenFormat === 'opaque' ? 'opaque' : 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    ...(accessTokenFormat === 'jwt-empty-aud' ? {
      formats: {
        customizers: {
          // oidc-provider throws on a JWT access token whose `aud` is missing or empty text.
          jwt: async (ctx, token, jwt) => { jwt.payload.aud = []; },
        },
      },
    } : {}),
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
      ctx.body = errorPage(out);
    },
  };

  const provider = new Provider(issuer, configuration);
  provider.on('grant.success', (ctx) => {
    if (ctx.oidc.params?.grant_type === 'refresh_token') counters.refresh_grants += 1;
  });

  // Cancelling on the sign-in page (`POST /interaction/{uid}/abort`): the person declines, and
  // the client is called back with `access_denied`.
  provider.use(async (ctx, next) => {
    if (ctx.method !== 'POST' || !/^\/interaction\/[^/]+\/abort$/.test(ctx.path)) return next();
    ctx.set('Cache-Control', 'no-store');
    await provider.interactionFinished(ctx.req, ctx.res, { error: 'access_denied', error_description: 'End-User aborted interaction' }, { mergeWithLastSubmission: false });
    ctx.respond = false;
    return undefined;
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

  // Token answers shaped like other providers' (see the options above).
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path !== '/token' || ctx.status !== 200 || !ctx.body || typeof ctx.body !== 'object') return;
    if (omitExpiresIn) delete ctx.body.expires_in;
    if (ctx.oidc?.params?.grant_type === 'refresh_token') {
      if (!refreshIdToken) delete ctx.body.id_token;
      if (refreshOmitsRefreshToken) delete ctx.body.refresh_token;
      if (ctx.body.id_token) counters.refresh_id_tokens += 1;
    }
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
      if (req.method === 'POST' && url.pathname === '/__hold-token') {
        if (!hold) {
          let release;
          const released = new Promise((r) => { release = r; });
          hold = { released, release, processAbandoned: url.searchParams.get('abandoned') === 'process' };
        }
        res.writeHead(204).end();
        return;
      }
      if (req.method === 'POST' && url.pathname === '/__drop-token') {
        dropping = true;
        res.writeHead(204).end();
        return;
      }
      if (req.method === 'POST' && url.pathname === '/__release-token') {
        hold?.release();
        hold = null;
        dropping = false;
        res.writeHead(204).end();
        return;
      }
      if (dropping && req.method === 'POST' && url.pathname === '/token') {
        counters.dropped_token_requests += 1;
        req.socket.destroy();
        return;
      }
      let heldBody = null;
      if (hold && req.method === 'POST' && url.pathname === '/token') {
        counters.held_token_requests += 1;
        const held = hold;
        let gone = false;
        req.socket.once('close', () => { gone = true; });
        // Read while the client is there, so the request can be processed after it has gone.
        if (held.processAbandoned) heldBody = await readBody(req);
        await held.released;
        if ((gone || req.socket.destroyed) && !held.processAbandoned) {
          counters.abandoned_token_requests += 1;
          res.destroy();
          return;
        }
      }
      if (req.method === 'POST' && (url.pathname === '/token' || url.pathname === '/token/revocation' || url.pathname.startsWith('/interaction/'))) {
        let body = heldBody ?? await readBody(req);
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
