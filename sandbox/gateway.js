// The Auth Gateway double (PROTOCOL §2): checks the API key and the user's JWT against the
// issuer's JWKS, then answers that user's credentials for a service. Tests can script the next
// responses per service. Never logs credential values or tokens. Dev/test tooling only.
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const json = (res, status, body, headers = {}) => {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
};

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Start the gateway double.
 * @param {{port?: number, issuer: string, apiKey: string, audience?: string,
 *   credentials?: {user: string, service: string, name: string, value: string}[],
 *   forbidden?: {user: string, service: string}[]}} options
 * @returns {Promise<{url: string, close: () => Promise<void>, stats: () => {requests: number}}>}
 */
export async function startGateway({ port = 0, issuer, apiKey, audience = 'latchkey-gateway', credentials = [], forbidden = [] }) {
  if (!issuer || !apiKey) throw new Error('startGateway needs issuer and apiKey');
  let jwks;
  const keySet = async () => {
    if (!jwks) {
      const res = await fetch(`${issuer}/.well-known/openid-configuration`);
      if (!res.ok) throw new Error(`discovery failed: ${res.status}`);
      jwks = createRemoteJWKSet(new URL((await res.json()).jwks_uri));
    }
    return jwks;
  };
  const scripts = new Map();
  let requests = 0;

  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://127.0.0.1');
      const script = /^\/__script\/([^/]+)$/.exec(url.pathname);
      if (script && req.method === 'POST') {
        const list = JSON.parse(await readBody(req));
        if (!Array.isArray(list)) return json(res, 400, { error: 'expected an array' });
        scripts.set(decodeURIComponent(script[1]), list);
        return json(res, 200, { scripted: list.length });
      }
      if (url.pathname === '/__stats' && req.method === 'GET') return json(res, 200, { requests });
      const m = /^\/api\/v1\/credentials\/([^/]+)$/.exec(url.pathname);
      if (!m || req.method !== 'GET') return json(res, 404, { error: 'not_found' });
      requests += 1;
      const service = decodeURIComponent(m[1]);
      const queue = scripts.get(service);
      if (queue?.length) {
        const step = queue.shift();
        if (step.delay_ms) await new Promise((r) => setTimeout(r, step.delay_ms));
        if (typeof step.raw === 'string') {
          // A malformed answer: these bytes as they are, with the given content type.
          res.writeHead(step.status ?? 200, { 'Content-Type': step.content_type ?? 'application/json' });
          return res.end(step.raw);
        }
        return json(res, step.status ?? 200, step.body ?? {});
      }
      if (req.headers['x-api-key'] !== apiKey) return json(res, 401, { error: 'invalid_api_key' });
      const auth = req.headers.authorization ?? '';
      const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
      if (!token) return json(res, 401, { error: 'invalid_token' });
      let sub;
      try {
        const { payload } = await jwtVerify(token, await keySet(), { issuer, audience });
        sub = payload.sub;
      } catch {
        return json(res, 401, { error: 'invalid_token' });
      }
      if (forbidden.some((f) => f.user === sub && f.service === service)) return json(res, 403, { error: 'forbidden' });
      const entries = credentials.filter((c) => c.user === sub && c.service === service);
      if (!entries.length) return json(res, 404, { error: 'unknown_service' });
      const data = Object.fromEntries(entries.map((c) => [c.name, c.value]));
      return json(res, 200, { data });
    } catch {
      return json(res, 500, { error: 'internal' });
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stats: () => ({ requests }),
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}
