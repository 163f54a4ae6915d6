// An MCP host that only launches stdio servers, as Claude Desktop does (official SDK client over
// StdioClientTransport), with elicitation and roots handlers. It spawns the given command (the
// current environment is passed on), drives server-http.mjs --resumable's tools through it and
// prints one JSON summary line on stdout:
//   node host-stdio.mjs [--scenario full|expire|inflight|pause] [--end stdin|sigterm] -- <command> [args...]
// full:   announce (waits for the log message and tools/list_changed sent outside any request),
//         ask (elicitation answered with a nonce), roots (roots/list on the GET stream),
//         interrupted (progress 1..5 across a stream the server breaks on purpose; the summary's
//         interruptedWire is that call's messages in the order the bridge wrote them);
// expire: whoami, expire, then echo, which must fail because the server ended the session;
// inflight: count 20 with progress; stdin closes at the first progress, the answer must still come;
// pause:  whoami, prints {"ready": true}, waits for a line on its own stdin, then echo (its text
//         or its error in the summary's afterPause).
// Then it ends the bridge (closes its stdin, or sends SIGTERM) and reports its exit status.
// Exits 0 when the summary was printed, 1 with the error on stderr otherwise.
import { randomUUID } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import {
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
  ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

const args = process.argv.slice(2);
const option = (name, fallback) => { const i = args.indexOf(name); return i >= 0 && i < args.indexOf('--') ? args[i + 1] : fallback; };
const scenario = option('--scenario', 'full');
const end = option('--end', 'stdin');
const [command, ...rest] = args.slice(args.indexOf('--') + 1);
const text = (result) => result.content.filter((c) => c.type === 'text').map((c) => c.text).join('');

// Resolves when `ready()` holds, checked on every message from the server; rejects after `ms`.
const waiters = new Set();
const wake = () => { for (const w of waiters) w(); };
const until = (ready, ms, what) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => { waiters.delete(check); reject(new Error(`timed out waiting for ${what}`)); }, ms);
  const check = () => { if (ready()) { clearTimeout(timer); waiters.delete(check); resolve(); } };
  waiters.add(check);
  check();
});

const nonce = `host-${randomUUID()}`;
const summary = { scenario, logs: [], listChanged: 0, elicitations: 0, rootsRequests: 0, errors: [] };
const client = new Client(
  { name: 'latchkey-test-host', version: '1.0.0' },
  { capabilities: { elicitation: { form: {} }, roots: { listChanged: false } } },
);
client.setRequestHandler(ElicitRequestSchema, async () => {
  summary.elicitations += 1;
  return { action: 'accept', content: { answer: nonce } };
});
client.setRequestHandler(ListRootsRequestSchema, async () => {
  summary.rootsRequests += 1;
  return { roots: [{ uri: `file:///${nonce}`, name: 'host root' }] };
});
client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => { summary.logs.push(n.params.data); wake(); });
client.setNotificationHandler(ToolListChangedNotificationSchema, () => { summary.listChanged += 1; wake(); });
// Anything on the bridge's stdout that is not a valid JSON-RPC message lands here.
client.onerror = (e) => { summary.errors.push(String(e?.message ?? e)); };

try {
  if (!command) throw new Error('usage: host-stdio.mjs [--scenario full|expire|inflight|pause] [--end stdin|sigterm] -- <command> [args...]');
  const transport = new StdioClientTransport({ command, args: rest, env: process.env, stderr: 'inherit' });
  await client.connect(transport);
  // Every message as it came off the bridge's stdout, in order. The SDK client handles a
  // notification a microtask later than a response, so messages read in one chunk would reach
  // its handlers out of order: they are handed on one at a time, each after the last settled.
  const wire = [];
  const handOn = transport.onmessage;
  let queue = Promise.resolve();
  transport.onmessage = (message, extra) => {
    wire.push(message);
    queue = queue.then(() => new Promise((resolve) => setImmediate(() => { handOn?.(message, extra); resolve(); })));
  };
  // The SDK keeps the child private; the host needs it to end the bridge as Claude Desktop does.
  const child = transport._process;
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  summary.nonce = nonce;

  if (scenario === 'full') {
    summary.announce = text(await client.callTool({ name: 'announce', arguments: {} }));
    await until(() => summary.logs.includes('announced') && summary.listChanged > 0, 10_000, 'the notifications sent outside a request');
    summary.ask = text(await client.callTool({ name: 'ask', arguments: { question: 'Which nonce?' } }));
    summary.roots = text(await client.callTool({ name: 'roots', arguments: {} }));
    summary.progress = [];
    summary.interrupted = text(await client.callTool({ name: 'interrupted', arguments: { n: 5 } }, undefined, {
      onprogress: (p) => { summary.progress.push(p.progress); },
    }));
    // The same call as the bridge wrote it: its progress values, then 'result' for its answer.
    const answer = wire.filter((m) => m.id !== undefined && m.method === undefined).at(-1);
    summary.interruptedWire = wire
      .filter((m) => (m.method === 'notifications/progress' && m.params.progressToken === answer.id) || m === answer)
      .map((m) => (m === answer ? 'result' : m.params.progress));
  } else if (scenario === 'expire') {
    summary.whoami = text(await client.callTool({ name: 'whoami', arguments: {} }));
    summary.expire = text(await client.callTool({ name: 'expire', arguments: {} }));
    try {
      await client.callTool({ name: 'echo', arguments: { text: 'after expiry' } });
      summary.afterExpiry = 'answered';
    } catch (e) {
      summary.afterExpiry = { code: e?.code, message: String(e?.message ?? e) };
    }
  } else if (scenario === 'inflight') {
    // The host goes away (closes the bridge's stdin) while its call is in flight.
    let started;
    const inFlight = new Promise((resolve) => { started = resolve; });
    summary.progress = [];
    const call = client.callTool({ name: 'count', arguments: { n: 20 } }, undefined, {
      onprogress: (p) => { summary.progress.push(p.progress); started(); },
    });
    await inFlight;
    child.stdin.end();
    summary.inflight = text(await call);
  } else if (scenario === 'pause') {
    summary.whoami = text(await client.callTool({ name: 'whoami', arguments: {} }));
    process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
    await new Promise((resolve) => process.stdin.once('data', resolve));
    process.stdin.pause();
    try {
      summary.afterPause = { text: text(await client.callTool({ name: 'echo', arguments: { text: 'after the pause' } })) };
    } catch (e) {
      summary.afterPause = { code: e?.code, message: String(e?.message ?? e), data: e?.data };
    }
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }

  if (end === 'sigterm') child.kill('SIGTERM');
  else child.stdin.end();
  const deadline = new Promise((resolve) => setTimeout(() => resolve({ code: null, signal: 'still running after 20 s' }), 20_000));
  summary.exit = await Promise.race([exited, deadline]);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  await client.close().catch(() => {});
  process.exit(0);
} catch (e) {
  process.stderr.write(`host-stdio.mjs: ${e?.stack ?? e}\nsummary so far: ${JSON.stringify(summary)}\n`);
  process.exit(1);
}
