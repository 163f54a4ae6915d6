// An MCP authorization server that takes Client ID Metadata Documents (draft-ietf-oauth-client-
// id-metadata-document), for Latchkey's `client_metadata_url`: the sandbox's MCP authorization
// server (mcp-auth-server.js, a real oidc-provider 9) with oidc-provider's own CIMD support
// switched on (it advertises `client_id_metadata_document_supported`, fetches an https client_id,
// requires its `client_id` to equal the URL, and holds redirect URIs to the document's), plus an
// HTTPS server that publishes Latchkey's document (docs/client-metadata.json, its client_id set
// to where it is served) with a throwaway self-signed certificate made at start by `openssl`.
//
// The only extension around oidc-provider is the `fetch` it is configured with: it trusts that
// one certificate (and nothing else), and goes to 127.0.0.1, which oidc-provider's default
// fetch refuses as a special-use address. Dynamic Client Registration stays open, so a test sees
// that Latchkey prefers the document when both are offered. Dev/test tooling only.
//
//   node cimd-auth-server.js '<json options as mcp-auth-server.js>'
// prints {"url": "<issuer>", "document": "<https document URL>"} when ready; exits when stdin
// closes (or on SIGTERM/SIGINT). /__stats adds `document_fetches` (GETs of the document).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startMcpAuthServer } from './mcp-auth-server.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const DOCUMENT_PATH = '/client-metadata.json';

/** A self-signed certificate for 127.0.0.1, valid one day; the key never leaves memory after. */
function throwawayCertificate() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'latchkey-cimd-'));
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'), '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    return {
      key: fs.readFileSync(path.join(dir, 'key.pem')),
      cert: fs.readFileSync(path.join(dir, 'cert.pem')),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A fetch for oidc-provider that trusts only `ca` and follows no redirect. */
function fetchTrusting(ca) {
  return (url, options = {}) => new Promise((resolve, reject) => {
    const target = new URL(url);
    if (target.protocol !== 'https:') {
      reject(new Error('only https client_id URLs are fetched'));
      return;
    }
    const request = https.request(target, {
      method: options.method ?? 'GET',
      headers: Object.fromEntries(new Headers(options.headers ?? {})),
      ca,
      signal: options.signal,
    }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('error', reject);
      response.on('end', () => {
        const headers = new Headers();
        for (const [name, value] of Object.entries(response.headers)) {
          for (const v of [value].flat()) headers.append(name, String(v));
        }
        resolve(new Response(Buffer.concat(chunks), { status: response.statusCode, headers }));
      });
    });
    request.on('error', reject);
    request.end();
  });
}

/**
 * Start the document's HTTPS server and the authorization server.
 * @param {object} [options] as startMcpAuthServer's, plus `document` (the JSON to publish,
 *   default docs/client-metadata.json; its client_id is replaced by the served URL unless
 *   `keepClientId` is set, to test a document naming another URL)
 */
export async function startCimdAuthServer({ document, keepClientId = false, ...options } = {}) {
  const { key, cert } = throwawayCertificate();
  const counters = { document_fetches: 0 };
  const published = document
    ?? JSON.parse(fs.readFileSync(path.join(here, '..', 'docs', 'client-metadata.json'), 'utf8'));
  const server = https.createServer({ key, cert });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const documentUrl = `https://127.0.0.1:${server.address().port}${DOCUMENT_PATH}`;
  const body = JSON.stringify(keepClientId ? published : { ...published, client_id: documentUrl });
  server.on('request', (req, res) => {
    if (req.method === 'GET' && req.url === DOCUMENT_PATH) {
      counters.document_fetches += 1;
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(body);
      return;
    }
    res.writeHead(404).end();
  });
  const auth = await startMcpAuthServer({
    ...options,
    cimd: { fetch: fetchTrusting(cert) },
    extraCounters: counters,
  });
  return {
    issuer: auth.issuer,
    documentUrl,
    stats: auth.stats,
    close: async () => {
      server.closeAllConnections?.();
      await new Promise((resolve) => { server.close(() => resolve()); });
      await auth.close();
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const options = JSON.parse(process.argv[2] ?? '{}');
  const started = await startCimdAuthServer(options);
  const stop = async () => {
    await started.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
  process.stdout.write(`${JSON.stringify({ url: started.issuer, document: started.documentUrl })}\n`);
}
