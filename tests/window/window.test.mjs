// The real app window: the built latchkey-app under Xvfb (run by scripts/test inside a private
// D-Bus session with an unlocked gnome-keyring), against the sandbox stack. The test starts the
// tray instance itself; tauri-driver + WebKitWebDriver start and drive the window process
// (`latchkey-app --window`), which reaches the instance over its control API. The tray never
// creates a webview: its menu's Open starts one window process (a second Open does not start
// another), closing the window ends that process, quitting the tray ends a live one. Log in through the login webview, see the user and a moving
// countdown, log out, and the keychain holds nothing of the account afterwards. The tray menu is
// read where a desktop shell reads it, over D-Bus (libayatana's com.canonical.dbusmenu). Then
// *Add MCP server* with the official SDK's OAuth-protected MCP server (tests/mcp/server-oauth.mjs)
// and its authorization server (sandbox/mcp-auth-server.js, oidc-provider): sign in inside the
// login window, the server listed as ready with its expiry, the tray summing it up, a step-up
// after a call that needs more scope (window, tray, "Grant more access"), removed. The login
// window's title names the sign-in page's origin, and a plain-http page off this computer is refused.
// The notices a person should see are read where the desktop reads them (a real notification
// daemon on the session bus): the expiry warning, a refresh that fails while the session still
// works (once, however many retries), and a session the identity provider ended. The window comes
// back where it was left, at the size it was given, after it was closed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// The binaries cargo built: under CARGO_TARGET_DIR when it is set, as cargo itself does.
const target = process.env.CARGO_TARGET_DIR ?? join(root, 'target');
const app = join(target, 'debug', 'latchkey-app');
const cli = join(target, 'debug', 'latchkey');
const shots = join(root, 'tests', 'output', 'window');
const children = [];
let driver;
let session;
let env;
/** The tray instance the test started. */
let tray;
/** The MCP authorization server's issuer and the SDK MCP server's URL. */
let mcp;
/** The sandbox stack's ready line: its IdP's issuer, gateway and upstream. */
let sandbox;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const occurrences = (haystack, needle) => haystack.split(needle).length - 1;

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

async function until(what, f, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await sleep(150);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

async function wd(method, path, body) {
  // A bounded request: WebKitWebDriver can leave a command unanswered (for example one sent to a
  // login window that closed itself meanwhile); a stuck call must fail the wait, not hang the suite.
  const res = await fetch(`${driver}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30000),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json).slice(0, 300)}`);
  return json.value;
}

const s = (path) => `/session/${session}${path}`;
const ELEMENT = 'element-6066-11e4-a52e-4f735466cecf'; // the W3C WebDriver element key
const find = async (xpath) => (await wd('POST', s('/element'), { using: 'xpath', value: xpath }))[ELEMENT];
const click = async (xpath) => wd('POST', s(`/element/${await find(xpath)}/click`), {});
const text = async (xpath) => wd('GET', s(`/element/${await find(xpath)}/text`));
const type = async (xpath, value) => wd('POST', s(`/element/${await find(xpath)}/value`), { text: value });

/**
 * A screenshot of the X display, as the person would see it. (WebDriver's own screenshot asks
 * WebKit for a snapshot, which never answers when GTK's GL is off, as the shipped app sets it.)
 */
async function shot(name) {
  await sleep(300); // let the last DOM change reach the screen
  execFileSync('import', ['-window', 'root', join(shots, `${name}.png`)], { stdio: 'ignore' });
}

/**
 * The tray menu, read over the session bus as a status-notifier host would: find the connection
 * that exports an ayatana notification item, then ask its menu for its layout. Items are
 * `{ id, label }`; `click(label)` activates one the way a desktop shell does.
 */
function trayMenu() {
  const gdbus = (...args) => execFileSync('gdbus', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const names = gdbus('call', '--session', '--dest', 'org.freedesktop.DBus', '--object-path', '/org/freedesktop/DBus', '--method', 'org.freedesktop.DBus.ListNames')
    .match(/':1\.\d+'/g)
    .map((n) => n.slice(1, -1));
  for (const name of names) {
    let menu;
    try {
      menu = gdbus('introspect', '--session', '--dest', name, '--object-path', '/org/ayatana/NotificationItem', '--recurse').match(/node (\S+\/Menu) \{/)?.[1];
    } catch {
      continue; // not the app
    }
    if (!menu) continue;
    const layout = gdbus('call', '--session', '--dest', name, '--object-path', menu, '--method', 'com.canonical.dbusmenu.GetLayout', '--', '0', '-1', '["label"]');
    const items = [...layout.matchAll(/\((\d+), \{'label': <'((?:[^'\\]|\\.)*)'>/g)].map((m) => ({ id: Number(m[1]), label: m[2] }));
    const click = (label) => {
      const item = items.find((i) => i.label === label);
      assert.ok(item, `the tray menu has "${label}": ${items.map((i) => i.label).join(' | ')}`);
      gdbus('call', '--session', '--dest', name, '--object-path', menu, '--method', 'com.canonical.dbusmenu.Event', '--', String(item.id), 'clicked', '<int32 0>', '0');
    };
    return { labels: items.map((i) => i.label), click };
  }
  return null;
}

/** Titles of the X windows (xwininfo prints non-ASCII ones escaped; the origins are ASCII). */
function windowTitles() {
  const tree = execFileSync('xwininfo', ['-root', '-tree'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return [...tree.matchAll(/^\s*0x[0-9a-f]+ "((?:[^"\\]|\\.)*)"/gm)].map((m) => m[1]);
}

/** The processes whose parent is `pid`: `{ pid, stat, args }` (a zombie's stat starts with Z). */
function childrenOf(pid) {
  let out = '';
  try {
    out = execFileSync('ps', ['-o', 'pid=,stat=,args=', '--ppid', String(pid)], { encoding: 'utf8' });
  } catch {
    return []; // none
  }
  return out.split('\n').filter((l) => l.trim()).map((l) => {
    const [, p, stat, args] = l.trim().match(/^(\d+)\s+(\S+)\s+(.*)$/);
    return { pid: Number(p), stat, args };
  });
}

/** The window processes the tray started (`latchkey-app --window …` or `--login …`). */
const trayWindows = (kind = '--window') => childrenOf(tray.pid).filter((c) => c.args.includes(` ${kind}`));

/**
 * The tray maps no WebKit page: no WebKit helper (web or network process) is the tray's child —
 * WebKit starts them for the process that owns a web view — and every child the tray has is one
 * of its own window processes.
 */
function assertTrayHasNoWebView(when) {
  const kids = childrenOf(tray.pid);
  assert.ok(!kids.some((c) => /WebKit/.test(c.args)), `${when}: no WebKit process under the tray: ${JSON.stringify(kids)}`);
  assert.ok(kids.every((c) => c.args.startsWith(`${app} `)), `${when}: the tray's only children are window processes: ${JSON.stringify(kids)}`);
}

/** Starts the tray instance with `environment`, and waits until `latchkey status` finds it. */
async function startTray(environment) {
  const child = spawn(app, [], { env: environment, stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(child);
  child.exited = new Promise((resolve) => child.once('exit', resolve));
  await until('the tray instance (latchkey status)', () => {
    try {
      return JSON.parse(execFileSync(cli, ['status', '--json'], { env: environment, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })).running;
    } catch {
      return false;
    }
  }, 30000);
  return child;
}

/** A WebDriver session whose application is a window process (`latchkey-app --window`). */
async function windowSession() {
  const created = await wd('POST', '/session', {
    capabilities: { alwaysMatch: { browserName: 'wry', 'tauri:options': { application: app, args: ['--window'] } } },
  });
  return created.sessionId;
}

/** Starts a Node peer that prints `{"url": ...}` when ready; it exits when its stdin closes. */
async function startPeer(cwd, args) {
  const child = spawn('node', args, { cwd, stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  const line = await new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    child.once('exit', (c) => reject(new Error(`node ${args[0]} exited ${c}`)));
  });
  return JSON.parse(line).url;
}

/** Keychain entries of a remote MCP server (its registration and its tokens). */
function serverEntries(name) {
  const out = execFileSync('sh', ['-c', `secret-tool search --all service '${env.LATCHKEY_KEYCHAIN_SERVICE}' 2>&1`], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim() === `attribute.username = server-tokens:${name}` || l.trim() === `attribute.username = server-client:${name}`).length;
}

/** Keychain entries of the `sandbox` account (secret-tool prints attributes on stderr). */
function accountEntries() {
  const out = execFileSync('sh', ['-c', `secret-tool search --all service '${env.LATCHKEY_KEYCHAIN_SERVICE}' 2>&1`], { encoding: 'utf8' });
  return out.split('\n').filter((l) => /^attribute\.username = [a-z]+:sandbox/.test(l)).length;
}

/**
 * A keychain entry's value as Latchkey stored it (`lk1:{count}:` then the first chunk, the rest
 * in `{entry}#1`…): the test reads the session's refresh token to revoke it at the provider.
 */
function keychainValue(service, entry) {
  const lookup = (name) => execFileSync('secret-tool', ['lookup', 'service', service, 'username', name], { encoding: 'utf8' });
  const head = lookup(entry);
  const [, count, first] = head.match(/^lk1:(\d+):([\s\S]*)$/) ?? [];
  assert.ok(count, `${entry} is a Latchkey keychain entry`);
  let value = first;
  for (let i = 1; i < Number(count); i += 1) value += lookup(`${entry}#${i}`);
  return value;
}

/** What the app sent to the desktop's notification service (dbus-monitor's text of each Notify call). */
let notices = '';

before(async () => {
  assert.ok(existsSync(app), 'target/debug/latchkey-app is built (cargo build -p latchkey-app)');
  assert.ok(existsSync(join(root, 'ui', 'dist', 'index.html')), 'ui/dist is built');
  assert.ok(process.env.DISPLAY, 'runs under xvfb-run');
  assert.ok(process.env.LATCHKEY_TEST_KEYCHAIN, 'runs inside scripts/with-keychain');
  mkdirSync(shots, { recursive: true });
  const home = mkdtempSync(join(tmpdir(), 'latchkey-window-'));
  mkdirSync(join(home, 'home', '.claude'), { recursive: true });
  env = {
    ...process.env,
    LATCHKEY_CONFIG_DIR: join(home, 'config'),
    LATCHKEY_DATA_DIR: join(home, 'data'),
    LATCHKEY_KEYCHAIN_SERVICE: `dev.latchkey.window.${process.pid}`,
    // MCP host files (Claude Code's ~/.claude.json) land in this private home.
    HOME: join(home, 'home'),
    XDG_CONFIG_HOME: join(home, 'xdg-config'),
    XDG_DATA_HOME: join(home, 'xdg-data'),
  };

  const stack = spawn('node', [join(root, 'sandbox', 'stack.js'), '--ephemeral', '--access-ttl', '300', '--write-config', env.LATCHKEY_CONFIG_DIR, '--api-key', 'window-gateway-key', '--exit-on-stdin-close'], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(stack);
  const ready = await new Promise((resolve, reject) => {
    createInterface({ input: stack.stdout }).once('line', resolve);
    stack.once('exit', (c) => reject(new Error(`sandbox exited ${c}`)));
  });
  sandbox = JSON.parse(ready);
  assert.ok(sandbox.issuer, 'the sandbox is up');
  const configFile = join(env.LATCHKEY_CONFIG_DIR, 'config.toml');
  const proxyPort = await freePort();
  writeFileSync(configFile, readFileSync(configFile, 'utf8').replace('127.0.0.1:47821', `127.0.0.1:${proxyPort}`));
  execFileSync(cli, ['gateway', 'set-key'], { env, input: 'window-gateway-key' });
  const issuer = (await startPeer(join(root, 'sandbox'), ['mcp-auth-server.js', JSON.stringify({ accessTtl: 3600 })])).replace(/\/$/, '');
  mcp = { issuer, url: await startPeer(join(root, 'tests', 'mcp'), ['server-oauth.mjs', '--issuer', issuer]) };

  // A real notification daemon (dunst) on the test session's bus, and a monitor of the Notify
  // calls it receives: the app's notices are read where the desktop reads them.
  const monitor = spawn('dbus-monitor', ['--session', "type='method_call',interface='org.freedesktop.Notifications',member='Notify'"], { stdio: ['ignore', 'pipe', 'ignore'] });
  children.push(monitor);
  monitor.stdout.setEncoding('utf8').on('data', (d) => (notices += d));
  const daemon = spawn('dunst', [], { env, stdio: 'ignore' });
  children.push(daemon);
  await until('a notification daemon on the session bus', () =>
    execFileSync('gdbus', ['call', '--session', '--dest', 'org.freedesktop.DBus', '--object-path', '/org/freedesktop/DBus', '--method', 'org.freedesktop.DBus.NameHasOwner', 'org.freedesktop.Notifications'], { encoding: 'utf8' }).includes('true'),
  );

  // A window process with no instance to serve it says so and exits (no display here, so the
  // message goes to stderr and startup.log only, not to a dialog waiting for a click).
  const { DISPLAY: _display, WAYLAND_DISPLAY: _wayland, ...headless } = env;
  const alone = spawnSync(app, ['--window'], { env: headless, encoding: 'utf8', timeout: 30000 });
  assert.equal(alone.status, 2, `exits with its start-up failure code: ${alone.stderr}`);
  assert.match(alone.stderr, /Latchkey cannot start: its window needs Latchkey running, and it is not/);
  assert.ok(!/panicked/.test(alone.stderr), 'never a panic');

  tray = await startTray(env);
  assert.deepEqual(childrenOf(tray.pid), [], 'the tray alone: no window, no WebKit process');
  assertTrayHasNoWebView('the tray started');

  const port = await freePort();
  // Its own WebKitWebDriver port: another run (or the first-run test's driver) may hold 4445.
  const d = spawn('tauri-driver', ['--port', String(port), '--native-port', String(await freePort())], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(d);
  driver = `http://127.0.0.1:${port}`;
  await until('tauri-driver', async () => (await fetch(`${driver}/status`)).ok);
  session = await windowSession();
});

after(async () => {
  if (session) await wd('DELETE', `/session/${session}`).catch(() => {});
  for (const c of children.reverse()) c.kill('SIGTERM');
});

test('log in through the login webview, see the countdown, create a client, add it to a host, log out, cancel a login from the tray', async () => {
  const main = await wd('GET', s('/window'));
  await until('the Log in button', () => find("//button[normalize-space()='Log in']"));
  await shot('1-logged-out');
  await click("//button[normalize-space()='Log in']");

  // The login window opens on the identity provider's sign-in page.
  const loginWindow = await until('the login window', async () => (await wd('GET', s('/window/handles'))).find((h) => h !== main));
  await wd('POST', s('/window'), { handle: loginWindow });
  await until('the sign-in form', () => find("//input[@name='login']"), 30000);
  await until('the sign-in page to finish loading', async () => (await wd('POST', s('/execute/sync'), { script: 'return document.readyState', args: [] })) === 'complete');
  await type("//input[@name='login']", 'alice');
  await type("//input[@name='password']", 'alice-password');
  await shot('2-sign-in');
  await click("//button[@type='submit']");

  // The window closes itself once the callback arrived; the main window shows the user.
  try {
    await until('the login window to close', async () => (await wd('GET', s('/window/handles'))).length === 1, 60000);
  } catch (e) {
    await shot('failure-login-window').catch(() => {});
    throw e;
  }
  await wd('POST', s('/window'), { handle: main });
  const user = await until('the user', async () => {
    const t = await text("//*[@data-testid='user']");
    return t.includes('Alice Example') ? t : null;
  });
  assert.match(user, /alice@example\.test/);
  const first = await text("//*[@data-testid='countdown']");
  const second = await until('the countdown to move', async () => {
    const t = await text("//*[@data-testid='countdown']");
    return t !== first ? t : null;
  }, 5000);
  assert.match(second, /min \d+ s$/);
  assert.ok(accountEntries() >= 1, 'the tokens are in the keychain');
  await shot('3-signed-in');
  const signedIn = await until('the tray menu to show the session', () => {
    const labels = trayMenu()?.labels;
    return labels?.some((l) => /^Signed in as alice@example\.test \S+ expires in \d/.test(l)) ? labels : null;
  });
  assert.ok(signedIn.includes('Log out (sandbox)'), `the tray offers Log out: ${signedIn.join(' | ')}`);
  // Access tokens live 5 minutes here, inside the 10-minute warning: the expiry notice reaches
  // the notification daemon, with when, and no secret.
  await until('the expiry notice at the notification daemon', () => notices.includes('string "Your Latchkey session ends soon"'));
  assert.match(notices, /string "Signed in as alice@example\.test \S+ expires in \d+ min"/);
  assert.ok(!/eyJ|window-gateway-key|access_token|refresh_token/.test(notices), `no secret in a notice: ${notices}`);
  // One line per service with its state; clicking it opens the window at Services.
  // (The menu is rebuilt on every change: a click on a layout just replaced is tried again.)
  await until('the service line to open the window at Services', async () => {
    const menu = trayMenu();
    const line = menu?.labels.find((l) => /^demo: ready/.test(l));
    if (!line) return null;
    menu.click(line);
    return find("//nav//button[@aria-current='page' and normalize-space()='Services']");
  });

  // Create a client: its token is shown once.
  await click("//nav//button[normalize-space()='Clients']");
  await type("//input[@placeholder='cursor']", 'window-test');
  await click("//input[@type='checkbox' and @value='demo']");
  await click("//button[normalize-space()='Create client']");
  const tokenField = await until('the new token', () => find("//input[@data-testid='new-token']"));
  const token = await wd('GET', s(`/element/${tokenField}/property/value`));
  assert.match(token, /^lk_[0-9A-Za-z]{22,}$/, 'a fresh client token');
  await shot('4-client-created');
  await click("//button[normalize-space()='Done']");

  // Add it to Claude Code's config in one click; the file gains our entry, no token in it.
  await click("//nav//button[normalize-space()='Hosts']");
  await until('the hosts', () => find("//option[@value='claude-code']"));
  await click("//option[@value='claude-code']");
  await click("//button[normalize-space()='Preview']");
  await until('the preview', () => find("//*[@data-testid='preview']"));
  await click("//button[normalize-space()='Add to Claude Code']");
  await until('the entry added', () => find("//*[@data-testid='applied']"));
  await shot('5-host-added');
  const claude = JSON.parse(readFileSync(join(env.HOME, '.claude.json'), 'utf8'));
  assert.match(claude.mcpServers['latchkey-demo'].headersHelper, / headers window-test$/);
  assert.ok(!JSON.stringify(claude).includes(token), 'no token in the host file');

  // The identity provider stops answering token requests (it closes their connections) while
  // the access token is still valid: "Refresh now" fails, the session is kept, and one notice
  // reaches the notification daemon saying what happened, that requests keep working until the
  // access token expires, and that Latchkey keeps trying. A retry is the same run of failures
  // (no second notice, counted at the end); the provider back, the next refresh succeeds.
  await click("//nav//button[normalize-space()='Session']");
  const renewFailed = 'string "Latchkey could not renew your session"';
  assert.equal(occurrences(notices, renewFailed), 0, 'no failed-refresh notice before a refresh failed');
  const refreshNow = "//button[normalize-space()='Refresh now' and not(@disabled)]";
  const dropped = async () => (await (await fetch(`${sandbox.issuer}/__stats`)).json()).dropped_token_requests;
  const account = () => JSON.parse(execFileSync(cli, ['status', '--json'], { env, encoding: 'utf8' })).accounts[0];
  assert.equal((await fetch(`${sandbox.issuer}/__drop-token`, { method: 'POST' })).status, 204);
  await click(refreshNow);
  await until('the failed-refresh notice at the notification daemon', () => notices.includes(renewFailed));
  assert.match(notices, /string "The identity provider is unreachable\. Requests keep working for \d+ (min|s) more, until the access token of sandbox expires; Latchkey keeps trying meanwhile\."/);
  const failing = account();
  assert.equal(failing.state.kind, 'active', `the session is kept: ${JSON.stringify(failing.state)}`);
  assert.equal(failing.refresh_failure?.code, 'idp_unreachable', 'the run of failures is in the status');
  await shot('5b-refresh-failed');
  const attempts = await dropped();
  await until('Refresh now again', () => find(refreshNow));
  await click(refreshNow);
  await until('the retry to fail too', async () => (await dropped()) > attempts && account().refresh_failure?.attempts >= 2);
  assert.equal((await fetch(`${sandbox.issuer}/__release-token`, { method: 'POST' })).status, 204);
  await until('Refresh now again', () => find(refreshNow));
  await click(refreshNow);
  await until('the refresh to succeed with the provider back', () => account().refresh_failure === undefined);
  assert.equal(account().state.kind, 'active');

  await click("//nav//button[normalize-space()='Session']");
  await click("//button[normalize-space()='Log out']");
  await until('logged out', () => find("//button[normalize-space()='Log in']"));
  await shot('6-logged-out-again');
  assert.equal(accountEntries(), 0, 'the keychain holds nothing of the account after logout');
  const signedOut = await until('the tray menu to follow the logout', () => {
    const labels = trayMenu()?.labels;
    return labels?.includes('Log in (sandbox)') ? labels : null;
  });
  assert.ok(!signedOut.some((l) => l.startsWith('Signed in')), `no session in the tray: ${signedOut.join(' | ')}`);
  await until('the service to need a login in the tray', () => trayMenu()?.labels.includes('demo: needs login'));

  // Log in from the tray menu, then close the login window instead of signing in: the login is
  // cancelled and everything is back to "logged out". The tray opens it in a login window
  // process of its own (the tray creates no webview); its title names the sign-in page's origin.
  assertTrayHasNoWebView('before the tray\'s login');
  trayMenu().click('Log in (sandbox)');
  const [loginProcess] = await until('a login window process started by the tray', () => {
    const found = trayWindows('--login');
    return found.length ? found : null;
  });
  assert.match(loginProcess.args, / --login sandbox --from-tray$/);
  const idp = new URL(sandbox.issuer).origin;
  await until(`the tray's login window titled with ${idp}`, () => windowTitles().some((t) => t.startsWith('Sign in') && t.includes(`${idp} (not encrypted, this computer)`)), 30000);
  assertTrayHasNoWebView('with the tray\'s login window open');
  await shot('7-tray-login-window');
  execFileSync(join(root, 'scripts', 'x11-close'), ['Sign in'], { env });
  await until('the login window process to exit, reaped by the tray', () => !childrenOf(tray.pid).some((c) => c.pid === loginProcess.pid));
  await until('the tray to offer Log in again', () => trayMenu()?.labels.includes('Log in (sandbox)'));
  await until('logged out after the cancel', () => JSON.parse(execFileSync(cli, ['status', '--json'], { env, encoding: 'utf8' })).accounts[0].state.kind === 'logged_out');

  // The window's own Log in: the login window (in the window process) has no address bar, so its
  // title names the page's origin (plain http is marked: the sandbox runs on this computer); a
  // page off this computer in plain http is refused, and the window says so instead.
  await click("//button[normalize-space()='Log in']");
  const loginAgain = await until('the login window', async () => (await wd('GET', s('/window/handles'))).find((h) => h !== main));
  await wd('POST', s('/window'), { handle: loginAgain });
  await until('the sign-in form', () => find("//input[@name='login']"), 30000);
  const pageOrigin = await wd('POST', s('/execute/sync'), { script: 'return location.origin', args: [] });
  assert.equal(pageOrigin, idp);
  await until(`the login window titled with ${idp}`, () => windowTitles().some((t) => t.startsWith('Sign in') && t.includes(`${idp} (not encrypted, this computer)`)));
  await wd('POST', s('/execute/sync'), { script: "location.href = 'http://login.example.invalid/steal?user=alice'; return true", args: [] });
  const reason = await until('the refusal notice in the login window', () => text("//p[@id='reason']"));
  assert.match(reason, /http:\/\/login\.example\.invalid: it is not encrypted/, 'the notice names the refused origin and why');
  assert.ok(!reason.includes('steal') && !reason.includes('alice'), 'only the origin is shown');
  await until('the title saying it was blocked', () => windowTitles().some((t) => t.startsWith('Sign in') && t.includes('blocked http://login.example.invalid')));
  await shot('7-login-navigation-blocked');
  // Closed the way a window manager's close button does it (WebDriver's own "close window"
  // closes the page, not the window).
  await wd('POST', s('/window'), { handle: main });
  execFileSync(join(root, 'scripts', 'x11-close'), ['Sign in'], { env });
  await until('the login window to be gone', async () => (await wd('GET', s('/window/handles'))).length === 1);
  await until('the Log in button back', () => find("//button[normalize-space()='Log in']"));
  await until('the tray to offer Log in again', () => trayMenu()?.labels.includes('Log in (sandbox)'));
  const status = JSON.parse(execFileSync(cli, ['status', '--json'], { env, encoding: 'utf8' }));
  assert.equal(status.accounts[0].state.kind, 'logged_out', `a cancelled login leaves "logged out": ${JSON.stringify(status.accounts[0].state)}`);
  assert.equal(accountEntries(), 0, 'a cancelled login stores nothing');
  await shot('7-login-cancelled');
  assertTrayHasNoWebView('after the logins');
  assert.equal(occurrences(notices, renewFailed), 1, `one failed-refresh notice for the run, not one per retry: ${notices}`);
  assert.equal(occurrences(notices, 'string "Your Latchkey session ends soon"'), 1, `one expiry warning for the session, the refreshes in between did not repeat it: ${notices}`);
  assert.ok(!/eyJ|window-gateway-key|access_token|refresh_token/.test(notices), `no secret in a notice: ${notices}`);
});

test('add a remote MCP server by URL, sign in inside the login window, see it ready with its expiry, remove it', async () => {
  const main = await wd('GET', s('/window'));
  await click("//nav//button[normalize-space()='MCP servers']");
  await click("//button[normalize-space()='Add MCP server']");
  await until('the Add MCP server dialog', () => find("//*[@role='dialog']//input[@id='server-url']"));
  await type("//input[@id='server-url']", mcp.url);
  await type("//input[@id='server-name']", 'sdk');
  // The SDK server is plain http on 127.0.0.1: allowed only by an explicit choice.
  await click("//label[contains(., 'Allow plain http')]/input[@type='checkbox']");
  await click("//button[normalize-space()='Add and sign in']");

  // The authorization server's sign-in page opens in the login window.
  const loginWindow = await until('the login window', async () => (await wd('GET', s('/window/handles'))).find((h) => h !== main), 30000);
  await wd('POST', s('/window'), { handle: main });
  await until('the progress in the dialog', () => find("//*[@data-testid='add-progress']"));
  await wd('POST', s('/window'), { handle: loginWindow });
  await until('the sign-in form', () => find("//input[@name='login']"), 30000);
  await until('the sign-in page to finish loading', async () => (await wd('POST', s('/execute/sync'), { script: 'return document.readyState', args: [] })) === 'complete');
  const page = await wd('POST', s('/execute/sync'), { script: 'return location.origin', args: [] });
  assert.equal(page, new URL(mcp.issuer).origin, 'the login window shows the MCP authorization server');
  await type("//input[@name='login']", 'alice');
  await type("//input[@name='password']", 'alice-password');
  await shot('8-mcp-server-sign-in');
  await click("//button[@type='submit']");

  try {
    await until('the login window to close', async () => (await wd('GET', s('/window/handles'))).length === 1, 60000);
  } catch (e) {
    await shot('failure-mcp-login-window').catch(() => {});
    throw e;
  }
  await wd('POST', s('/window'), { handle: main });
  const card = "//*[@data-testid='server' and @data-name='sdk']";
  await until('the server listed as ready', () => find(`${card}[@data-state='ready']`), 30000);
  assert.equal(await text(`${card}//*[@data-testid='server-badge']`), 'Ready');
  assert.equal(await text(`${card}//*[@data-testid='server-issuer']`), mcp.issuer);
  const expiry = await text(`${card}//*[@data-testid='server-expiry']`);
  assert.match(expiry, /^(1 h 00 min|59 min \d+ s)$/, `a one-hour token: ${expiry}`);
  assert.match(await text(`${card}//*[@data-testid='server-proxy-url']`), /^http:\/\/127\.0\.0\.1:\d+\/sdk\/mcp$/);
  assert.equal(await text("//*[@data-testid='servers-notice']"), 'sdk added and signed in.');
  assert.ok(serverEntries('sdk') >= 2, 'the registration and the tokens are in the keychain');
  const config = readFileSync(join(env.LATCHKEY_CONFIG_DIR, 'config.toml'), 'utf8');
  assert.ok(config.includes('[[servers]]') && config.includes(mcp.url), 'the server is in the configuration');
  assert.ok(!/eyJ|access_token|refresh_token/.test(config), 'and no token is');
  const page2 = await wd('POST', s('/execute/sync'), { script: 'return document.documentElement.outerHTML', args: [] });
  assert.ok(!/eyJ[\w-]+\.[\w-]+\./.test(page2), 'no token reaches the window');
  await shot('9-mcp-server-ready');
  await until('the tray to show the server ready with its token expiry', () =>
    trayMenu()?.labels.some((l) => /^sdk: ready · token expires in \d/.test(l)),
  );

  // A local client for the server, made in the window; a call needing a scope not granted yet
  // (the SDK server's /admin/mcp wants mcp:admin) turns into a step-up, shown in the window and
  // the tray; "Grant more access" signs in again and the server is ready with the new scope.
  const proxyUrl = await text(`${card}//*[@data-testid='server-proxy-url']`);
  await click("//nav//button[normalize-space()='Clients']");
  await type("//input[@placeholder='cursor']", 'window-mcp');
  await click("//input[@type='checkbox' and @value='sdk']");
  await click("//button[normalize-space()='Create client']");
  const clientField = await until('the new token', () => find("//input[@data-testid='new-token']"));
  const clientToken = await wd('GET', s(`/element/${clientField}/property/value`));
  await click("//button[normalize-space()='Done']");
  const admin = await fetch(proxyUrl.replace(/\/sdk\/mcp$/, '/sdk/admin/mcp'), {
    method: 'POST',
    headers: { 'x-latchkey-client': clientToken, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'window-test', version: '1' } } }),
  });
  assert.equal(admin.headers.get('www-authenticate'), null, 'no OAuth detail reaches the host');
  assert.ok(admin.status >= 400, `the call needing more scope is refused for now: ${admin.status}`);
  await click("//nav//button[normalize-space()='MCP servers']");
  await until('the step-up in the window', () => find(`${card}[@data-state='needs_step_up']`), 20000);
  assert.equal(await text(`${card}//*[@data-testid='server-badge']`), 'More access needed');
  await until('the tray to ask for more access', () => trayMenu()?.labels.includes('sdk: more access needed'));
  await shot('10-mcp-server-step-up');
  await click(`${card}//button[normalize-space()='Grant more access']`);
  // The authorization server may remember alice from the first sign-in (same webview cookies):
  // then the login window comes and goes on its own; otherwise sign in again.
  const opened = await until('the login window for the step-up, or the step-up done', async () => {
    const handle = (await wd('GET', s('/window/handles'))).find((h) => h !== main);
    if (handle) return { handle };
    return (await find(`${card}[@data-state='ready']`).catch(() => null)) ? { done: true } : null;
  }, 30000);
  let form = null;
  // When the authorization server remembers alice, the login window finishes and closes itself
  // within seconds: watch for that from the main window first, and only step into the login
  // window (to sign in) when it stays, so no command is sent to a window that is going away.
  const finishedAlone = opened.handle
    ? await until('the step-up to finish without a sign-in', async () => {
      const handles = await wd('GET', s('/window/handles'));
      return !handles.includes(opened.handle) || (await find(`${card}[@data-state='ready']`).catch(() => null)) ? true : null;
    }, 8000).catch(() => false)
    : true;
  if (opened.handle && !finishedAlone) {
    await wd('POST', s('/window'), { handle: opened.handle });
    form = await until('the sign-in form or the window closing', async () => {
      const handles = await wd('GET', s('/window/handles'));
      if (!handles.includes(opened.handle)) return 'closed';
      return (await find("//input[@name='login']").catch(() => null)) ? 'form' : null;
    }, 30000);
  }
  if (form === 'form') {
    await until('the sign-in page to finish loading', async () => (await wd('POST', s('/execute/sync'), { script: 'return document.readyState', args: [] })) === 'complete');
    await type("//input[@name='login']", 'alice');
    await type("//input[@name='password']", 'alice-password');
    await click("//button[@type='submit']");
  }
  await until('the step-up window to close', async () => (await wd('GET', s('/window/handles'))).length === 1, 60000);
  await wd('POST', s('/window'), { handle: main });
  await until('the server ready again', () => find(`${card}[@data-state='ready']`), 30000);
  assert.match(await text(`${card}//*[@data-testid='server-scopes']`), /mcp:admin/, 'the new scope is granted');
  await shot('11-mcp-server-more-access-granted');

  // Remove it, after the confirmation: tokens revoked and wiped, the entry gone.
  await click(`${card}//button[@aria-label='Remove sdk']`);
  await click(`${card}//*[@role='group']//button[normalize-space()='Remove sdk']`);
  await until('the server gone', async () => {
    const handles = await wd('POST', s('/elements'), { using: 'xpath', value: card });
    return handles.length === 0;
  });
  assert.equal(serverEntries('sdk'), 0, 'nothing of the server is left in the keychain');
  assert.ok(!readFileSync(join(env.LATCHKEY_CONFIG_DIR, 'config.toml'), 'utf8').includes(mcp.url), 'nor in the configuration');
  await until('the tray to drop the server', () => !trayMenu()?.labels.some((l) => l.startsWith('sdk:')));
  await shot('12-mcp-server-removed');
});

/** The geometry of the X window titled exactly `title`, as xwininfo reports it. */
function xGeometry(title) {
  const info = execFileSync('xwininfo', ['-name', title], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const n = (label) => Number(info.match(new RegExp(`${label}:\\s+(-?\\d+)`))[1]);
  return { x: n('Absolute upper-left X'), y: n('Absolute upper-left Y'), width: n('Width'), height: n('Height') };
}

// The window remembers its size and place (tauri-plugin-store's settings.json), across window
// processes: moved and resized, closed (its process ends), and opened again from the tray (a new
// process), it comes back as it was. The tray starts exactly one window process however often
// Open is clicked, closing the window ends it, and quitting the tray ends a live one.
test('the window runs in its own process: back where it was left, one process per window, gone with the tray', async () => {
  const wanted = { x: 130, y: 90, width: 620, height: 540 };
  const set = await wd('POST', s('/window/rect'), wanted);
  assert.deepEqual({ x: set.x, y: set.y, width: set.width, height: set.height }, wanted, 'the window took the size and place asked for');
  const file = join(env.XDG_DATA_HOME, 'dev.latchkey.app', 'settings.json');
  const kept = await until('the geometry written to settings.json', () => {
    const g = existsSync(file) && JSON.parse(readFileSync(file, 'utf8')).main_window;
    return g && g.x === wanted.x && g.y === wanted.y && g.width === wanted.width && g.height === wanted.height ? g : null;
  });
  assert.ok(kept, 'kept for the next start too');
  await shot('16-window-moved');
  const driven = Number(execFileSync('pgrep', ['-f', '-x', `${app} --window`], { encoding: 'utf8' }).trim().split('\n')[0]);
  assert.ok(driven > 0, 'the window process tauri-driver started');
  execFileSync(join(root, 'scripts', 'x11-close'), ['Latchkey'], { env });
  await until('the window process to exit with its window', () => {
    try {
      execFileSync('kill', ['-0', String(driven)], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  await wd('DELETE', `/session/${session}`).catch(() => {});
  session = null;
  assert.deepEqual(childrenOf(tray.pid), [], 'no window: the tray alone again');

  // Open from the tray: exactly one window process, whatever the clicks.
  trayMenu().click('Open Latchkey');
  const [started] = await until('one window process started by the tray', () => {
    const found = trayWindows();
    return found.length ? found : null;
  });
  assert.match(started.args, / --window --from-tray$/);
  await until('the reopened window', () => windowTitles().includes('Latchkey'), 30000);
  trayMenu().click('Open Latchkey');
  trayMenu().click('Open Latchkey');
  await sleep(1500); // what a second process would need to appear
  assert.deepEqual(trayWindows().map((c) => c.pid), [started.pid], 'a second Open shows the same window, it starts no other process');
  assertTrayHasNoWebView('with the tray\'s window open');
  const rect = await until('the window at its remembered place', () => {
    const g = xGeometry('Latchkey');
    return g.x === wanted.x && g.y === wanted.y && g.width === wanted.width && g.height === wanted.height ? g : null;
  }, 10000).catch(() => xGeometry('Latchkey'));
  assert.deepEqual(rect, wanted, 'the same size and place as when it was closed, in a new process');
  await shot('17-window-reopened');

  // Closing the window ends its process, which the tray reaps (no zombie left).
  execFileSync(join(root, 'scripts', 'x11-close'), ['Latchkey'], { env });
  await until('the window process gone and reaped', () => childrenOf(tray.pid).length === 0);

  // Quitting the tray ends a live window process.
  trayMenu().click('Open Latchkey');
  const [live] = await until('the window process again', () => {
    const found = trayWindows();
    return found.length ? found : null;
  });
  await until('its window', () => windowTitles().includes('Latchkey'), 30000);
  trayMenu().click('Quit Latchkey');
  await until('the tray to quit', () => tray.exitCode !== null || tray.signalCode !== null, 20000);
  await until('its window process to end with it', () => {
    try {
      execFileSync('kill', ['-0', String(live.pid)], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  assert.ok(!windowTitles().includes('Latchkey'), 'no window left');
});

// First run, self-contained: the app started on a fresh configuration directory opens on Set up
// Latchkey; the sandbox's issuer and client ID pass discovery, Save writes the file, the running
// app loads it and logs in through the login window; a service added from Services is picked up
// by the reload and served by the proxy. Runs last: the first tray has quit (one instance per
// desktop session); it starts another, and a window process on its own tauri-driver.
test('first run: set up from the window against the sandbox, log in, add a service the proxy serves', async () => {
  if (session) await wd('DELETE', `/session/${session}`).catch(() => {});
  session = null;
  const sandboxConfig = readFileSync(join(env.LATCHKEY_CONFIG_DIR, 'config.toml'), 'utf8');
  const issuer = sandboxConfig.match(/^issuer = "(.*)"$/m)[1];
  const upstream = sandboxConfig.match(/^upstream = "(.*)"$/m)[1];
  const fresh = mkdtempSync(join(tmpdir(), 'latchkey-first-run-'));
  const proxyPort = await freePort();
  const freshEnv = {
    ...env,
    LATCHKEY_CONFIG_DIR: join(fresh, 'config'),
    LATCHKEY_DATA_DIR: join(fresh, 'data'),
    LATCHKEY_KEYCHAIN_SERVICE: `dev.latchkey.first-run.${process.pid}`,
    XDG_CONFIG_HOME: join(fresh, 'xdg-config'),
    XDG_DATA_HOME: join(fresh, 'xdg-data'),
  };
  // The proxy on a free port (the window's Proxy port preference), not the default one.
  mkdirSync(join(fresh, 'xdg-data', 'dev.latchkey.app'), { recursive: true });
  writeFileSync(join(fresh, 'xdg-data', 'dev.latchkey.app', 'settings.json'), JSON.stringify({ preferences: { proxy_port: proxyPort } }));
  if (tray.exitCode === null && tray.signalCode === null) {
    tray.kill('SIGTERM'); // one tray per desktop session (an earlier test failed before its Quit)
    await tray.exited;
  }
  tray = await startTray(freshEnv);
  const port = await freePort();
  const d = spawn('tauri-driver', ['--port', String(port), '--native-port', String(await freePort())], { env: freshEnv, stdio: ['ignore', 'inherit', 'inherit'] });
  children.push(d);
  driver = `http://127.0.0.1:${port}`;
  await until('the second tauri-driver', async () => (await fetch(`${driver}/status`)).ok);
  session = await windowSession();
  const main = await wd('GET', s('/window'));

  await until('the Set up Latchkey screen', () => find("//h1[normalize-space()='Set up Latchkey']"), 30000);
  assert.ok(!existsSync(join(freshEnv.LATCHKEY_CONFIG_DIR, 'config.toml')), 'no configuration yet');
  await type("//input[@name='issuer']", issuer);
  await type("//input[@name='client_id']", 'latchkey');
  await click("//label[contains(., 'Allow plain http')]/input[@type='checkbox']");
  await click("//button[normalize-space()='Check']");
  await until('discovery to succeed', async () => {
    const refused = await text("//*[@role='alert']").catch(() => null);
    if (refused) throw new Error(`discovery refused: ${refused}`);
    return find("//h2[normalize-space()='Found your identity provider']");
  }, 30000);
  await shot('13-first-run-discovered');
  await click("//button[normalize-space()='Save']");
  await until('the saved configuration loaded (Log in)', () => find("//button[normalize-space()='Log in']"), 30000);
  assert.match(readFileSync(join(freshEnv.LATCHKEY_CONFIG_DIR, 'config.toml'), 'utf8'), new RegExp(`issuer = "${issuer}"`));

  await click("//button[normalize-space()='Log in']");
  const loginWindow = await until('the login window', async () => (await wd('GET', s('/window/handles'))).find((h) => h !== main), 30000);
  await wd('POST', s('/window'), { handle: loginWindow });
  await until('the sign-in form', () => find("//input[@name='login']"), 30000);
  await until('the sign-in page to finish loading', async () => (await wd('POST', s('/execute/sync'), { script: 'return document.readyState', args: [] })) === 'complete');
  await type("//input[@name='login']", 'alice');
  await type("//input[@name='password']", 'alice-password');
  await click("//button[@type='submit']");
  await until('the login window to close', async () => (await wd('GET', s('/window/handles'))).length === 1, 60000);
  await wd('POST', s('/window'), { handle: main });
  await until('the session', async () => (await text("//*[@data-testid='user']")).includes('Alice Example'));
  await shot('14-first-run-signed-in');

  // A service from Services → Add, written to the file and applied by the reload.
  await click("//nav//button[normalize-space()='Services']");
  await click("//button[normalize-space()='Add service']");
  const form = "//form[@aria-label='Add service']";
  await type(`${form}//input[@name='name']`, 'echo');
  await type(`${form}//input[@name='upstream']`, upstream);
  await click(`${form}//button[normalize-space()='Save']`);
  assert.match(await until('the refusal on the upstream', () => text("//*[@id='svc-upstream-problem']")), /allow_loopback_http = true/);
  await click(`${form}//input[@name='allow_loopback_http']`);
  await click(`${form}//button[normalize-space()='Save']`);
  await until('the service listed', () => find("//*[@data-testid='service-row' and @data-name='echo']"), 20000);
  await shot('15-first-run-service-added');
  assert.match(readFileSync(join(freshEnv.LATCHKEY_CONFIG_DIR, 'config.toml'), 'utf8'), /\[\[services\]\]\nname = "echo"/);

  await click("//nav//button[normalize-space()='Clients']");
  await type("//input[@placeholder='cursor']", 'first-run');
  await click("//input[@type='checkbox' and @value='echo']");
  await click("//button[normalize-space()='Create client']");
  const tokenField = await until('the new token', () => find("//input[@data-testid='new-token']"));
  const token = await wd('GET', s(`/element/${tokenField}/property/value`));
  await click("//button[normalize-space()='Done']");
  const res = await fetch(`http://127.0.0.1:${proxyPort}/echo/whoami`, { headers: { 'x-latchkey-client': token } });
  assert.equal(res.status, 200, 'the proxy serves the service added in the window');
  assert.equal((await res.json()).received.authorization, 'present', 'with the session\'s access token injected');

  // The identity provider ends the session of the account set up above (`work`): its refresh
  // token is revoked, as an administrator or a "sign out everywhere" does. The next refresh is
  // refused, the session ends, and the notice at the notification daemon says why and to log in
  // again, with no secret in it.
  const refreshToken = keychainValue(freshEnv.LATCHKEY_KEYCHAIN_SERVICE, 'tokens:work').match(/"refresh_token":"([^"]+)"/)?.[1];
  assert.ok(refreshToken, 'the session holds a refresh token');
  const revoked = await fetch(`${issuer}/token/revocation`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: refreshToken, client_id: 'latchkey' }).toString(),
  });
  assert.equal(revoked.status, 200, 'the provider revoked the grant');
  const mark = notices.length;
  await click("//nav//button[normalize-space()='Session']");
  await click("//button[normalize-space()='Refresh now']");
  await until('the ended-session notice at the notification daemon', () => notices.slice(mark).includes('string "Latchkey needs you to log in again"'));
  const ended = notices.slice(mark);
  assert.match(ended, /string "The identity provider ended the session; log in again \(account work\)\."/);
  assert.ok(!ended.includes(refreshToken) && !ended.includes(token), 'no token in the notice');
  assert.ok(!/eyJ|window-gateway-key|access_token|refresh_token/.test(notices), `no secret in any notice: ${notices}`);
  await until('the window to offer Log in', () => find("//button[normalize-space()='Log in']"));
  await shot('18-session-ended');
});
