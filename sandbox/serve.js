// One sandbox server per process, for the Rust test kit:
//   node serve.js <idp|gateway|upstream> '<json options>'
// Prints one JSON line when ready ({"url": ...}), exits when stdin closes or on SIGTERM/SIGINT.
import { startIdp } from './idp.js';
import { startGateway } from './gateway.js';
import { startUpstream } from './upstream.js';

const [kind, raw = '{}'] = process.argv.slice(2);
const options = JSON.parse(raw);
const starters = { idp: startIdp, gateway: startGateway, upstream: startUpstream };
if (!starters[kind]) {
  process.stderr.write('usage: node serve.js <idp|gateway|upstream> \'<json options>\'\n');
  process.exit(2);
}
const server = await starters[kind](options);
const stop = async () => {
  await server.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
process.stdout.write(`${JSON.stringify({ url: server.issuer ?? server.url })}\n`);
