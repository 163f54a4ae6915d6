import { afterEach, describe, expect, it } from 'vitest';
import { flushSync, mount, unmount } from 'svelte';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import StateBadge from '../sections/StateBadge.svelte';
import { TRAY_ICON_TONE, TRAY_ICON_URL, type Badge } from './badges';
import { pendingServer, serverBadge } from './servers';
import { credentialBadge, sessionBadge } from './time';
import type { CredentialState, ServerState, ServerView, SessionState, TrayIcon } from './types';

afterEach(() => {
  document.body.innerHTML = '';
});

/** The repository's root (ui/src/lib/ is three levels down). */
const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const user = { subject: 'alice', name: 'Alice', email: 'alice@example.test' };
const now = 1000;

/** Every session state, with the icon the tray shows for it (crates/runtime/src/tray.rs `tray_status`). */
const sessions: [string, SessionState, TrayIcon][] = [
  ['logged out', { kind: 'logged_out' }, 'logged_out'],
  ['logging in', { kind: 'logging_in' }, 'logged_out'],
  ['refreshing', { kind: 'refreshing', user, expires_at: now + 60 }, 'active'],
  ['active', { kind: 'active', user, issued_at: now, expires_at: now + 7200, renewable: true }, 'active'],
  ['expiring', { kind: 'active', user, issued_at: now - 7000, expires_at: now + 200, renewable: true }, 'expiring'],
  ['expired', { kind: 'expired', user, reason: 'the identity provider ended the session; log in again' }, 'expired'],
  ['error', { kind: 'error', code: 'keychain_locked', message: 'unlock the keychain' }, 'error'],
];

const credentials: CredentialState[] = ['fresh', 'cached', 'stale', 'missing', 'forbidden', 'not_fetched', 'error'];

const server = (state: ServerState): ServerView => ({
  name: 'linear',
  url: 'https://mcp.linear.app/mcp',
  proxy_url: 'http://127.0.0.1:47821/linear/mcp',
  issuer: 'https://mcp.linear.app',
  state,
  expires_at: now + 3600,
  scopes: [],
  message: null,
  last_login_error: null,
  login_requested: null,
});
/** Every server state, with the icon of the tray's line for it (a login needed is "log in again"). */
const servers: [ServerState, TrayIcon][] = [
  ['ready', 'active'],
  ['needs_login', 'expired'],
  ['needs_step_up', 'expiring'],
  ['logging_in', 'logged_out'],
  ['failing', 'error'],
];

function render(badge: Badge) {
  const target = document.createElement('div');
  document.body.appendChild(target);
  const component = mount(StateBadge, { target, props: { badge, testid: 'badge' } });
  flushSync();
  const shown = target.querySelector<HTMLElement>('[data-testid=badge]');
  if (!shown) throw new Error('no badge rendered');
  return { shown, component };
}

/** The badge as a person meets it: its words, and the tray icon drawn beside them. */
function expectShown(badge: Badge) {
  const { shown, component } = render(badge);
  expect(shown.textContent?.trim(), 'the state is named in words, not by colour alone').toBe(badge.label);
  expect(badge.label.trim().length).toBeGreaterThan(2);
  const img = shown.querySelector('img');
  expect(img?.getAttribute('src'), 'the tray icon of the state').toBe(TRAY_ICON_URL[badge.icon]);
  expect(img?.getAttribute('alt'), 'decorative: the words already name the state').toBe('');
  expect(shown.dataset['icon']).toBe(badge.icon);
  expect(shown.classList.contains(`tone-${TRAY_ICON_TONE[badge.icon]}`), 'in the icon\'s colour').toBe(true);
  unmount(component);
}

describe('state badges', () => {
  it('every session state has a badge with the tray icon the tray shows for it', () => {
    for (const [what, state, icon] of sessions) {
      const badge = sessionBadge(state, now);
      expect(badge.icon, what).toBe(icon);
      expectShown(badge);
    }
    const labels = sessions.map(([, state]) => sessionBadge(state, now).label);
    expect(new Set(labels).size, 'tells apart every state but the two sides of a refresh').toBeGreaterThanOrEqual(labels.length - 1);
  });

  it('every credential state has a badge, each named differently', () => {
    const badges = credentials.map(credentialBadge);
    badges.forEach(expectShown);
    expect(new Set(badges.map((b) => b.label)).size).toBe(credentials.length);
    expect(credentialBadge('fresh').icon).toBe('active');
    expect(credentialBadge('cached').icon, 'served, but not as it should be').toBe('expiring');
    expect(credentialBadge('forbidden').icon).toBe('error');
    expect(credentialBadge('not_fetched').icon).toBe('logged_out');
  });

  it('every MCP server state has a badge with the icon of its tray line', () => {
    for (const [state, icon] of servers) {
      const badge = serverBadge(server(state), now);
      expect(badge.icon, state).toBe(icon);
      expectShown(badge);
    }
    expect(pendingServer([server('logging_in')], 'https://mcp.linear.app/mcp')?.name).toBe('linear');
  });

  it('each tray icon is drawn from the tray\'s own file, icons/tray-<state>.png', () => {
    const icons = Object.keys(TRAY_ICON_URL) as TrayIcon[];
    expect(icons.sort()).toEqual(['active', 'error', 'expired', 'expiring', 'logged_out']);
    for (const icon of icons) {
      const file = `icons/tray-${icon.replace('_', '-')}.png`;
      expect(TRAY_ICON_URL[icon].endsWith(`/${file}`), `${icon}: ${TRAY_ICON_URL[icon]}`).toBe(true);
      const png = readFileSync(join(repo, file));
      expect(png.subarray(1, 4).toString('latin1'), `${file} is a PNG`).toBe('PNG');
    }
    expect(new Set(Object.values(TRAY_ICON_URL)).size, 'one picture per state').toBe(icons.length);
  });
});
