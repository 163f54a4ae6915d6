// stack.js as a process: the ready line, --write-config (only when absent) and exit on stdin close.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

async function startStack(args) {
  const child = spawn(process.execPath, ['stack.js', '--ephemeral', '--exit-on-stdin-close', ...args], {
    cwd: new URL('..', import.meta.url),
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  const [line] = await once(createInterface({ input: child.stdout }), 'line');
  return { child, ready: JSON.parse(line) };
}

test('stack.js prints its endpoints, writes a config and exits when stdin closes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-sandbox-'));
  const { child, ready } = await startStack(['--write-config', dir, '--api-key', 'k1', '--credential', 'alice:demo:api_key:v:1']);
  assert.equal(ready.gateway_api_key, 'k1');
  assert.equal(ready.demo_key, 'v:1', 'values may contain colons');
  assert.deepEqual(ready.users[0], { login: 'alice', password: 'alice-password' });
  const config = readFileSync(join(dir, 'config.toml'), 'utf8');
  assert.match(config, new RegExp(`issuer = "${ready.issuer}"`));
  assert.match(config, new RegExp(`url = "${ready.gateway}"`));
  assert.match(config, new RegExp(`upstream = "${ready.upstream}"`));
  const whoami = await (await fetch(`${ready.upstream}/whoami`, { headers: { 'x-api-key': 'v:1' } })).json();
  assert.equal(whoami.matches_expected, true);
  child.stdin.end();
  const [code] = await once(child, 'exit');
  assert.equal(code, 0);
});

test('an existing config is left unchanged', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'latchkey-sandbox-'));
  writeFileSync(join(dir, 'config.toml'), 'mine\n');
  const { child } = await startStack(['--write-config', dir]);
  assert.equal(readFileSync(join(dir, 'config.toml'), 'utf8'), 'mine\n');
  child.stdin.end();
  await once(child, 'exit');
});
