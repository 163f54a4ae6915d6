// The whole sandbox for humans and tests: IdP, gateway double and demo upstream, printing one
// JSON line when ready. See README in the repo for flags. Dev/test tooling only.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startIdp, DEFAULT_USERS } from './idp.js';
import { startGateway } from './gateway.js';
import { startUpstream } from './upstream.js';

const { values } = parseArgs({
  options: {
    'port-base': { type: 'string', default: '47900' },
    ephemeral: { type: 'boolean', default: false },
    'write-config': { type: 'string' },
    'access-ttl': { type: 'string', default: '3600' },
    'refresh-ttl': { type: 'string', default: '86400' },
    'api-key': { type: 'string' },
    credential: { type: 'string', multiple: true, default: [] },
    'exit-on-stdin-close': { type: 'boolean', default: false },
  },
});

const positive = (name) => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 0) {
    process.stderr.write(`--${name} must be a non-negative integer\n`);
    process.exit(2);
  }
  return n;
};

const base = positive('port-base');
const port = (offset) => (values.ephemeral ? 0 : base + offset);
const apiKey = values['api-key'] ?? `sandbox-gw-${randomBytes(16).toString('hex')}`;
const demoKey = `sandbox-demo-${randomBytes(16).toString('hex')}`;
const credentials = values.credential.length
  ? values.credential.map((spec) => {
    const [user, service, name, ...rest] = spec.split(':');
    if (!user || !service || !name || !rest.length) {
      process.stderr.write(`--credential must be user:service:name:value, got a malformed value\n`);
      process.exit(2);
    }
    return { user, service, name, value: rest.join(':') };
  })
  : [{ user: 'alice', service: 'demo', name: 'api_key', value: demoKey }];
const expectKey = credentials.find((c) => c.service === 'demo')?.value ?? demoKey;

const idp = await startIdp({ port: port(0), accessTtl: positive('access-ttl'), refreshTtl: positive('refresh-ttl') });
const gateway = await startGateway({ port: port(1), issuer: idp.issuer, apiKey, credentials });
const upstream = await startUpstream({ port: port(2), expectKey });

if (values['write-config']) {
  const dir = values['write-config'];
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'config.toml');
  if (existsSync(file)) {
    process.stderr.write(`${file} exists; left unchanged\n`);
  } else {
    writeFileSync(file, `version = 1
[proxy]
listen = "127.0.0.1:47821"
[[accounts]]
name = "sandbox"
issuer = "${idp.issuer}"
client_id = "latchkey"
audience = "latchkey-gateway"
allow_insecure_http = true
[gateway]
url = "${gateway.url}"
allow_insecure_http = true
[[services]]
name = "demo"
account = "sandbox"
gateway_endpoint = "/api/v1/credentials/demo"
upstream = "${upstream.url}"
allow_loopback_http = true
credentials = [{ name = "api_key", header = "X-API-Key" }]
env = { DEMO_API_KEY = "api_key" }
`, { mode: 0o600 });
  }
}

const stop = async () => {
  await Promise.allSettled([idp.close(), gateway.close(), upstream.close()]);
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (values['exit-on-stdin-close']) {
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}

process.stdout.write(`${JSON.stringify({
  issuer: idp.issuer,
  gateway: gateway.url,
  upstream: upstream.url,
  gateway_api_key: apiKey,
  demo_key: expectKey,
  users: Object.entries(DEFAULT_USERS).map(([login, u]) => ({ login, password: u.password })),
})}\n`);
