// A demo upstream API for the sandbox: tells which credential it received (as a fingerprint,
// never the value), streams server-sent events, and echoes anything else. Dev/test tooling only.
import http from 'node:http';
import { createHash } from 'node:crypto';

const fp = (v) => (v == null ? null : createHash('sha256').update(String(v)).digest('hex').slice(0, 12));

/**
 * Start the demo upstream.
 * @param {{port?: number, expectKey?: string, events?: number}} [options]
 * @returns {Promise<{url: string, close: () => Promise<void>}>}
 */
export async function startUpstream({ port = 0, expectKey, events = 5 } = {}) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    const send = (status, body) => {
      res.writeHead(status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === '/whoami') {
      const key = req.headers['x-api-key'] ?? null;
      const queryKey = url.searchParams.get('api_key');
      return send(200, {
        received: {
          'x-api-key_fp': fp(key),
          authorization: req.headers.authorization ? 'present' : null,
          query_api_key_fp: fp(queryKey),
        },
        matches_expected: expectKey != null && (key === expectKey || queryKey === expectKey),
        path: url.pathname,
        query_keys: [...new Set(url.searchParams.keys())],
      });
    }
    if (url.pathname === '/events') {
      const count = Number(url.searchParams.get('n') ?? events);
      const last = Number(req.headers['last-event-id'] ?? 0) || 0;
      res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-store', Connection: 'keep-alive' });
      for (let id = last + 1; id <= last + count; id += 1) {
        res.write(`id: ${id}\nevent: tick\ndata: {"n":${id}}\n\n`);
      }
      return res.end();
    }
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => send(200, {
      method: req.method,
      path: url.pathname,
      query_keys: [...new Set(url.searchParams.keys())],
      header_names: Object.keys(req.headers).sort(),
      body_bytes: Buffer.concat(chunks).length,
    }));
    return undefined;
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}
