import { afterEach, describe, expect, it } from 'vitest';
import { flushSync, mount, unmount } from 'svelte';
import { clearMocks, mockIPC } from '@tauri-apps/api/mocks';
import Session from './Session.svelte';
import type { AccountView, Overview } from '../lib/types';

afterEach(() => {
  clearMocks();
  document.body.innerHTML = '';
});

const overview = (account: Partial<AccountView>): Overview => ({
  accounts: [
    { name: 'sandbox', issuer: 'http://127.0.0.1:47900', state: { kind: 'logged_out' }, last_login_error: null, login_requested: null, ...account },
  ],
  services: [],
  servers: [],
  proxy: { url: 'http://127.0.0.1:47821', listening: true, error: null },
  keychain: { ok: true, backend: 'secret-service', message: null },
  now: 1000,
  config: { state: 'loaded', path: '/home/alice/.config/latchkey/config.toml' },
  activity_lost: 0,
});

function render(o: Overview) {
  const target = document.createElement('div');
  document.body.appendChild(target);
  const component = mount(Session, { target, props: { overview: o, now: 1000, onchange: () => {} } });
  flushSync();
  return { target, component };
}

describe('Session section', () => {
  it('says which local client asked for which service while nobody is logged in', () => {
    const { target, component } = render(overview({ login_requested: { client: 'cursor', service: 'github', at: 990 } }));
    const line = target.querySelector('[data-testid=login-requested]');
    expect(line?.textContent).toContain('cursor asked for github');
    expect(line?.getAttribute('role')).toBe('status');
    unmount(component);
  });

  it('says while the session still works that its renewal keeps failing, and why', () => {
    const active = { kind: 'active', user: { subject: 'u1', name: 'Alice', email: null }, expires_at: 1600, issued_at: 400, renewable: true } as const;
    const quiet = render(overview({ state: active }));
    expect(quiet.target.querySelector('[data-testid=refresh-failure]')).toBeNull();
    unmount(quiet.component);
    const message = 'the identity provider is unreachable (request failed (127.0.0.1)); check your network and try again';
    const { target, component } = render(
      overview({ state: active, refresh_failure: { code: 'idp_unreachable', message, since: 880, at: 990, attempts: 3 } }),
    );
    const box = target.querySelector<HTMLElement>('[data-testid=refresh-failure]');
    expect(box?.dataset.code).toBe('idp_unreachable');
    expect(box?.getAttribute('role')).toBe('status');
    expect(box?.textContent).toContain('Renewal failing: first failure 2 min ago, 3 attempts');
    expect(box?.textContent).toContain(message);
    expect(box?.textContent).toContain('Requests keep working until the session expires');
    unmount(component);
  });

  it('shows why the last login failed, with the fix, as an alert', () => {
    const message =
      'the identity provider refuses the redirect URI `http://127.0.0.1:41234/oauth/callback` for client id `latchkey` (invalid_redirect_uri): register `http://127.0.0.1/oauth/callback` for client `latchkey` at the provider';
    const { target, component } = render(
      overview({ last_login_error: { code: 'redirect_uri_not_registered', message, at: 990 } }),
    );
    const box = target.querySelector('[data-testid=login-error]');
    expect(box?.getAttribute('data-code')).toBe('redirect_uri_not_registered');
    expect(box?.getAttribute('role')).toBe('alert');
    expect(box?.textContent).toContain('Redirect URI not registered at the provider');
    expect(box?.textContent).toContain(message);
    expect(target.querySelector('button.primary')?.textContent).toBe('Log in');
    unmount(component);
  });

  it('shows a cancel as a status, not an alert', () => {
    const { target, component } = render(
      overview({
        last_login_error: { code: 'access_denied', message: 'the sign-in was cancelled or refused at the identity provider; log in again when you are ready', at: 990 },
      }),
    );
    const box = target.querySelector('[data-testid=login-error]');
    expect(box?.getAttribute('role')).toBe('status');
    expect(box?.className).toContain('tone-idle');
    expect(box?.textContent).toContain('Sign-in cancelled or declined');
    unmount(component);
  });

  it('shows a login refused by the pre-flight once, in the card, not again as a page alert', async () => {
    const message = 'the identity provider does not accept client id `latchkey` (invalid_client): check `client_id`';
    mockIPC((cmd) => {
      if (cmd === 'login') throw { code: 'client_not_registered', message };
      return null;
    });
    const { target, component } = render(
      overview({ last_login_error: { code: 'client_not_registered', message, at: 990 } }),
    );
    (target.querySelector('button.primary') as HTMLButtonElement).click();
    await new Promise((r) => setTimeout(r, 0));
    flushSync();
    const alerts = [...target.querySelectorAll('[role=alert]')];
    expect(alerts).toHaveLength(1);
    expect(alerts[0]?.getAttribute('data-testid')).toBe('login-error');
    expect(alerts[0]?.textContent).toContain('Client id not accepted by the provider');
    unmount(component);
  });

  it('shows nothing about failures when there is none, or while a new login runs', () => {
    const quiet = render(overview({}));
    expect(quiet.target.querySelector('[data-testid=login-error]')).toBeNull();
    unmount(quiet.component);
    mockIPC(() => null);
    const running = render(
      overview({ state: { kind: 'logging_in' }, last_login_error: { code: 'idp_unreachable', message: 'm', at: 1 } }),
    );
    expect(running.target.querySelector('[data-testid=login-error]')).toBeNull();
    unmount(running.component);
  });
});
