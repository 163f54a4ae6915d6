// The Debian package, as a person installs it: scripts/package builds the .deb (debug profile,
// the binaries the suite already built), apt-get installs it on this machine, the installed
// `latchkey` answers `--version` and `config check`, the installed `latchkey-app` is started as
// the desktop entry starts it and its tray comes up (read over D-Bus as a desktop shell reads it),
// it quits from its tray menu, and `apt-get remove --purge` leaves no file behind outside the
// user's own directories.
//
// Needs root (apt-get and dpkg; CI and the dev machine run as root) and is skipped with a message
// otherwise. Run by scripts/test inside scripts/with-keychain (a private D-Bus session with an
// unlocked gnome-keyring, and private XDG directories: the "user's own" config and data) under
// xvfb-run. Refuses to run when a `latchkey` package is already installed: it would be removed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// Where cargo puts what scripts/package built (CARGO_TARGET_DIR or a config may move it off
// `target/`), found as scripts/package finds it.
const targetDir = JSON.parse(
  execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }),
).target_directory;
const pkg = 'latchkey';
const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : 'needs root to install a package (apt-get, dpkg): run as root, as CI does';
/** Where a package may put files: everything else on the system must be as it was. */
const watched = ['/usr', '/etc', '/opt'];

let deb;
/** The desktop entry's `Exec`, which the menu runs. */
let exec;
let installed = false;
let before_;
let env;
const version = readFileSync(join(root, 'Cargo.toml'), 'utf8').match(/\[workspace\.package\][^[]*?\nversion = "([^"]+)"/)[1];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const run = (cmd, args, opts = {}) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts });
const apt = (...args) =>
  run('apt-get', ['-y', '-q', '-o', 'DPkg::Lock::Timeout=300', ...args], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
const isInstalled = () => spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' }).stdout.includes('install ok installed');
const sha256 = (file) => createHash('sha256').update(readFileSync(file)).digest('hex');

async function until(what, f, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Every path under the watched trees (files, links and directories), as `find` lists them. */
function snapshot() {
  const out = run('find', [...watched, '-xdev'], { maxBuffer: 512 * 1024 * 1024 });
  return new Set(out.split('\n').filter(Boolean));
}

/**
 * The tray of the process `pid`, read over the session bus as a status-notifier host reads it:
 * the connection owned by that process that exports an ayatana notification item, and its
 * dbusmenu layout. Returns `{ labels, click(label) }`, or null while there is none.
 */
function trayOf(pid) {
  const gdbus = (...args) => run('gdbus', args);
  const names = gdbus('call', '--session', '--dest', 'org.freedesktop.DBus', '--object-path', '/org/freedesktop/DBus', '--method', 'org.freedesktop.DBus.ListNames')
    .match(/':1\.\d+'/g)
    .map((n) => n.slice(1, -1));
  for (const name of names) {
    let menu;
    try {
      const owner = gdbus('call', '--session', '--dest', 'org.freedesktop.DBus', '--object-path', '/org/freedesktop/DBus', '--method', 'org.freedesktop.DBus.GetConnectionUnixProcessID', name);
      if (Number(owner.match(/uint32 (\d+)/)?.[1]) !== pid) continue;
      menu = gdbus('introspect', '--session', '--dest', name, '--object-path', '/org/ayatana/NotificationItem', '--recurse').match(/node (\S+\/Menu) \{/)?.[1];
    } catch {
      continue;
    }
    if (!menu) continue;
    const layout = gdbus('call', '--session', '--dest', name, '--object-path', menu, '--method', 'com.canonical.dbusmenu.GetLayout', '--', '0', '-1', '["label"]');
    const items = [...layout.matchAll(/\((\d+), \{'label': <'((?:[^'\\]|\\.)*)'>/g)].map((m) => ({ id: Number(m[1]), label: m[2] }));
    if (!items.length) continue;
    const click = (label) => {
      const item = items.find((i) => i.label === label);
      assert.ok(item, `the tray menu has "${label}": ${items.map((i) => i.label).join(' | ')}`);
      gdbus('call', '--session', '--dest', name, '--object-path', menu, '--method', 'com.canonical.dbusmenu.Event', '--', String(item.id), 'clicked', '<int32 0>', '0');
    };
    return { labels: items.map((i) => i.label), click };
  }
  return null;
}

/** Starts the installed app as the menu does (the desktop entry's `Exec`, found on PATH), until its tray is up. */
async function startInstalledApp(appEnv = env) {
  assert.ok(exec, 'the desktop entry was read');
  const app = spawn(exec, [], { env: appEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  app.stdout.on('data', (d) => (output += d));
  app.stderr.on('data', (d) => (output += d));
  const exited = new Promise((resolve) => app.once('exit', (code, signal) => resolve({ code, signal })));
  let gone = null;
  exited.then((e) => (gone = e));
  try {
    const tray = await until('the installed app\'s tray', () => {
      if (gone) throw Object.assign(new Error(`latchkey-app exited (${JSON.stringify(gone)}):\n${output}`), { fatal: true });
      return trayOf(app.pid);
    }, 60000);
    return { app, tray, exited, output: () => output };
  } catch (e) {
    app.kill('SIGKILL');
    throw e;
  }
}

before(() => {
  if (skip) return;
  assert.ok(process.env.DISPLAY, 'runs under xvfb-run');
  assert.ok(process.env.LATCHKEY_TEST_KEYCHAIN, 'runs inside scripts/with-keychain');
  assert.ok(
    !isInstalled(),
    `a \`${pkg}\` package is already installed on this machine; this test installs and purges its own, so remove that one first (apt-get remove --purge ${pkg})`,
  );
  // scripts/package prints the .deb's path as its last line (its progress goes to stderr).
  deb = process.env.LATCHKEY_DEB || run(join(root, 'scripts', 'package'), ['--profile', 'debug'], { stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop();
  assert.ok(existsSync(deb), `scripts/package made ${deb}`);
  // The user's own directories: with-keychain's private XDG directories.
  env = {
    ...process.env,
    // An empty home: whatever the app writes must go to the XDG directories, the user's own.
    HOME: mkdtempSync(join(tmpdir(), 'latchkey-package-home-')),
    PATH: `/usr/bin:/bin`,
    LATCHKEY_KEYCHAIN_SERVICE: `dev.latchkey.package.${process.pid}`,
  };
  for (const v of ['LATCHKEY_CONFIG_DIR', 'LATCHKEY_DATA_DIR', 'LATCHKEY_OPEN_WINDOW']) delete env[v];
  assert.ok(env.XDG_CONFIG_HOME?.startsWith('/tmp/'), 'XDG_CONFIG_HOME is with-keychain\'s private one');
});

after(() => {
  // Never leave the package on the machine, even when a test failed half-way.
  if (installed && isInstalled()) apt('remove', '--purge', pkg);
});

test('the .deb says what it is: name, version from the workspace, dependencies, description', { skip }, () => {
  const field = (f) => run('dpkg-deb', ['-f', deb, f]).trim();
  assert.equal(field('Package'), pkg);
  assert.equal(field('Version'), version, 'the workspace version');
  const depends = field('Depends').split(',').map((d) => d.trim().split(' ')[0]);
  for (const d of ['libayatana-appindicator3-1', 'libwebkit2gtk-4.1-0', 'libgtk-3-0']) assert.ok(depends.includes(d), `Depends has ${d}: ${depends}`);
  const description = field('Description').split('\n');
  assert.match(description[0], /MCP/, 'a real one-line summary');
  assert.ok(description.length > 2, 'and a long description');
});

test('apt-get installs it; the CLI and the app are on PATH with the desktop entry and its icons', { skip }, () => {
  before_ = snapshot();
  apt('install', deb.startsWith('/') ? deb : `./${deb}`);
  installed = true;
  assert.ok(isInstalled(), 'dpkg lists the package as installed');
  const files = run('dpkg', ['-L', pkg]).split('\n');
  for (const f of ['/usr/bin/latchkey', '/usr/bin/latchkey-app', '/usr/share/applications/Latchkey.desktop', '/usr/share/doc/latchkey/copyright']) assert.ok(files.includes(f), `the package installs ${f}`);
  for (const size of ['16x16', '32x32', '48x48', '64x64', '128x128', '256x256', '512x512']) {
    const icon = `/usr/share/icons/hicolor/${size}/apps/latchkey-app.png`;
    assert.ok(files.includes(icon) && statSync(icon).size > 0, `an icon of ${size}`);
  }
  assert.ok(files.some((f) => f.startsWith('/usr/share/doc/latchkey/sbom/') && f.endsWith('.cdx.json')), 'the SBOMs');
  // The CLI is the one this workspace built, not a copy of something else.
  assert.equal(sha256('/usr/bin/latchkey'), sha256(join(targetDir, 'debug', 'latchkey')), '/usr/bin/latchkey is the debug build of latchkey');

  const entry = readFileSync('/usr/share/applications/Latchkey.desktop', 'utf8');
  const key = (k) => entry.match(new RegExp(`^${k}=(.*)$`, 'm'))?.[1];
  assert.equal(key('Type'), 'Application');
  exec = key('Exec');
  assert.equal(exec, 'latchkey-app');
  assert.equal(key('Icon'), 'latchkey-app');
  assert.deepEqual(key('Categories').split(';').filter(Boolean), ['Utility', 'Network', 'Security', 'System']);
  assert.ok(key('Comment')?.length > 10, 'a comment for the menu');
});

test('the installed latchkey says its version and checks a configuration', { skip }, async () => {
  assert.equal(run('latchkey', ['--version'], { env }).trim(), `latchkey ${version}`);
  const dir = join(env.XDG_CONFIG_HOME, 'latchkey');
  mkdirSync(dir, { recursive: true });
  assert.equal(run('latchkey', ['config', 'path'], { env }).trim(), join(dir, 'config.toml'), 'the CLI reads the user\'s XDG config directory');
  const port = await freePort();
  writeFileSync(
    join(dir, 'config.toml'),
    `version = 1

[proxy]
listen = "127.0.0.1:${port}"

[[accounts]]
name = "work"
issuer = "https://idp.example.com"
client_id = "latchkey"

[gateway]
url = "https://auth-gateway.example.com"

[[services]]
name = "github"
account = "work"
gateway_endpoint = "/api/v1/credentials/github"
upstream = "https://api.github.com"
credentials = [{ name = "token", header = "Authorization", prefix = "Bearer " }]
`,
  );
  const check = spawnSync('latchkey', ['config', 'check'], { env, encoding: 'utf8' });
  assert.equal(check.status, 0, `config check passes: ${check.stdout}${check.stderr}`);
});

test('the installed app starts as from the menu, its tray comes up, and it quits from the tray', { skip }, async () => {
  const { app, tray, exited, output } = await startInstalledApp();
  assert.ok(tray.labels.includes('Quit Latchkey'), `the tray menu: ${tray.labels.join(' | ')}`);
  assert.ok(tray.labels.some((l) => l.includes('work')), `the tray names the configured account: ${tray.labels.join(' | ')}`);
  tray.click('Quit Latchkey');
  const end = await Promise.race([exited, sleep(20000).then(() => null)]);
  if (!end) app.kill('SIGKILL');
  assert.ok(end, `the app quit from its tray menu:\n${output()}`);
});

test('a first start with no configuration stays in the tray (the window offers the setup)', { skip }, async () => {
  // A user who has written nothing yet: an empty config directory of their own.
  const fresh = { ...env, XDG_CONFIG_HOME: mkdtempSync(join(tmpdir(), 'latchkey-package-config-')) };
  const { app, tray, exited, output } = await startInstalledApp(fresh);
  assert.ok(tray.labels.includes('Quit Latchkey'), `the tray menu: ${tray.labels.join(' | ')}`);
  assert.equal(app.exitCode, null, 'still running with its tray up');
  tray.click('Quit Latchkey');
  const end = await Promise.race([exited, sleep(20000).then(() => null)]);
  if (!end) app.kill('SIGKILL');
  assert.ok(end, `the app quit from its tray menu:\n${output()}`);
});

test('the installed app\'s window says the workspace version in Settings, About', { skip }, async () => {
  // The installed binary, driven as tests/window drives the built one: the tray instance started
  // as the menu does, then its window process (`latchkey-app --window`) by tauri-driver +
  // WebKitWebDriver.
  const installedApp = await startInstalledApp(env);
  const port = await freePort();
  // A desktop session's locale: under LANG=C.UTF-8, WebKit's navigator.language is "C", which the
  // window's chart library hands to Intl.NumberFormat, and the window stays blank (a bug of its own).
  const driverEnv = { ...env, PATH: process.env.PATH, LANG: 'en_US.UTF-8' };
  const driver = spawn('tauri-driver', ['--port', String(port)], { env: driverEnv, stdio: ['ignore', 'ignore', 'inherit'] });
  const base = `http://127.0.0.1:${port}`;
  const wd = async (method, path, body) => {
    const res = await fetch(`${base}${path}`, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const json = await res.json();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json).slice(0, 300)}`);
    return json.value;
  };
  let session;
  try {
    await until('tauri-driver', async () => (await fetch(`${base}/status`)).ok);
    session = (await wd('POST', '/session', { capabilities: { alwaysMatch: { browserName: 'wry', 'tauri:options': { application: '/usr/bin/latchkey-app', args: ['--window'] } } } })).sessionId;
    const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf';
    const find = async (xpath) => (await wd('POST', `/session/${session}/element`, { using: 'xpath', value: xpath }))[ELEMENT];
    const settings = await until('the Settings button', () => find("//nav//button[normalize-space()='Settings']")).catch(async (e) => {
      throw new Error(`${e.message}\nthe window shows: ${(await wd('GET', `/session/${session}/source`).catch(() => '?')).slice(0, 3000)}`);
    });
    await wd('POST', `/session/${session}/element/${settings}/click`, {});
    const about = await until('the About line with a version', async () => {
      const t = await wd('GET', `/session/${session}/element/${await find("//*[@data-testid='about']")}/text`);
      return t.trim() !== 'Latchkey' && t.trim();
    });
    assert.equal(about, `Latchkey ${version}`);
  } finally {
    if (session) await wd('DELETE', `/session/${session}`).catch(() => {});
    driver.kill('SIGTERM');
    installedApp.tray.click('Quit Latchkey');
    const end = await Promise.race([installedApp.exited, sleep(20000).then(() => null)]);
    if (!end) installedApp.app.kill('SIGKILL');
  }
});

test('apt-get remove --purge leaves nothing behind outside the user\'s directories', { skip }, () => {
  const files = run('dpkg', ['-L', pkg]).split('\n').filter((f) => f && f !== '/.');
  apt('remove', '--purge', pkg);
  installed = false;
  assert.ok(!isInstalled(), 'dpkg no longer lists the package');
  const left = files.filter((f) => existsSync(f) && !(statSync(f).isDirectory() && before_.has(f)));
  assert.deepEqual(left, [], 'every file the package installed is gone');
  const added = [...snapshot()].filter((p) => !before_.has(p));
  assert.deepEqual(added, [], `nothing new under ${watched.join(', ')}`);
  assert.deepEqual(readdirSync(env.HOME), [], 'nothing in the home directory outside the XDG ones');
});
