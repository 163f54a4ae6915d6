import { afterEach, describe, expect, it } from 'vitest';
import { flushSync, mount, unmount } from 'svelte';
import { clearMocks, mockIPC } from '@tauri-apps/api/mocks';
import Servers from './Servers.svelte';
import type { Overview, ServerView } from '../lib/types';

afterEach(() => {
  clearMocks();
  document.body.innerHTML = '';
});

const server = (over: Partial<ServerView>): ServerView => ({
  name: 'linear',
  url: 'https://mcp.linear.app/mcp',
  issuer: 'https://auth.linear.app',
  state: 'ready',
  expires_at: 1000 + 42 * 60 + 5,
  scopes: ['read', 'write'],
  message: null,
  proxy_url: 'http://127.0.0.1:47821/linear/mcp',
  last_login_error: null,
  login_requested: null,
  ...over,
});

const overview = (servers: ServerView[]): Overview => ({
  accounts: [],
  services: [],
  servers,
  proxy: { url: 'http://127.0.0.1:47821', listening: true, error: null },
  keychain: { ok: true, backend: 'secret-service', message: null },
  now: 1000,
  config: { state: 'loaded', path: '/home/alice/.config/latchkey/config.toml' },
  activity_lost: 0,
});

function render(servers: ServerView[]) {
  const target = document.createElement('div');
  document.body.appendChild(target);
  let changes = 0;
  const component = mount(Servers, { target, props: { overview: overview(servers), now: 1000, onchange: () => (changes += 1) } });
  flushSync();
  return { target, component, changes: () => changes };
}

/** Lets pending promises (the mocked IPC) settle, then applies Svelte's updates. */
async function settle() {
  for (let i = 0; i < 3; i += 1) await new Promise((r) => setTimeout(r, 0));
  flushSync();
}

const button = (root: ParentNode, label: string) =>
  [...root.querySelectorAll('button')].find((b) => b.textContent?.trim() === label) as HTMLButtonElement | undefined;

function fill(input: HTMLInputElement, value: string) {
  input.value = value;
  input.dispatchEvent(new Event('input', { bubbles: true }));
}

function submit(target: HTMLElement) {
  target.querySelector('form')?.dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
  flushSync();
}

describe('MCP servers section', () => {
  it('shows each server with its state, issuer, expiry, and what to do', () => {
    mockIPC(() => null);
    const { target, component } = render([
      server({}),
      server({ name: 'sentry', state: 'needs_login', expires_at: null, message: 'the refresh token was refused; log in again' }),
      server({ name: 'stripe', state: 'needs_step_up', message: 'a tool needs scope payments:write' }),
    ]);
    const cards = [...target.querySelectorAll<HTMLElement>('[data-testid=server]')];
    expect(cards.map((c) => c.dataset.name)).toEqual(['linear', 'sentry', 'stripe']);
    const [ready, login, stepUp] = cards as [HTMLElement, HTMLElement, HTMLElement];
    expect(ready.querySelector('[data-testid=server-badge]')?.textContent).toBe('Ready');
    expect(ready.querySelector('[data-testid=server-issuer]')?.textContent).toBe('https://auth.linear.app');
    expect(ready.querySelector('[data-testid=server-expiry]')?.textContent).toBe('42 min 5 s');
    expect(ready.querySelector('[data-testid=server-scopes]')?.textContent).toBe('read, write');
    expect(button(ready, 'Log in'), 'a ready server needs nothing').toBeUndefined();
    expect(login.querySelector('[data-testid=server-badge]')?.textContent).toBe('Log in needed');
    expect(login.querySelector('[data-testid=server-message]')?.textContent).toContain('log in again');
    expect(button(login, 'Log in')).toBeDefined();
    expect(button(stepUp, 'Grant more access')).toBeDefined();
    expect(target.querySelector('[data-testid=servers-summary]')?.textContent).toBe('1 MCP server ready');
    expect(target.textContent, 'no token-looking value on the page').not.toMatch(/Bearer|eyJ/);
    unmount(component);
  });

  it('logs in again or grants more access through server_login', async () => {
    const calls: Array<[string, unknown]> = [];
    mockIPC((cmd, args) => {
      calls.push([cmd, args]);
      return null;
    });
    const { target, component } = render([server({ name: 'stripe', state: 'needs_step_up' })]);
    button(target, 'Grant more access')?.click();
    await settle();
    expect(calls).toEqual([['server_login', { name: 'stripe' }]]);
    unmount(component);
  });

  it('checks the URL before sending anything, then adds and signs in, showing progress', async () => {
    const calls: Array<[string, unknown]> = [];
    let finish: (v: ServerView) => void = () => {};
    mockIPC((cmd, args) => {
      calls.push([cmd, args]);
      if (cmd === 'add_server') return new Promise<ServerView>((resolve) => (finish = resolve));
      return null;
    });
    const { target, component } = render([]);
    expect(target.querySelector('[data-testid=servers-empty]')).not.toBeNull();
    button(target, 'Add MCP server')?.click();
    flushSync();
    const dialog = target.querySelector('[role=dialog]') as HTMLElement;
    expect(dialog.getAttribute('aria-modal')).toBe('true');
    expect(document.getElementById(dialog.getAttribute('aria-labelledby') ?? '')?.textContent).toBe('Add MCP server');
    const url = target.querySelector('#server-url') as HTMLInputElement;
    expect(document.activeElement, 'focus starts in the URL field').toBe(url);
    expect(target.querySelector('label[for=server-url]')?.textContent).toBe('Server URL');

    fill(url, 'http://mcp.example.com/mcp');
    submit(target);
    expect(target.querySelector('[data-testid=url-problem]')?.textContent).toMatch(/Use https:\/\//);
    expect(url.getAttribute('aria-invalid')).toBe('true');
    expect(url.getAttribute('aria-describedby')).toBe('server-url-problem');
    expect(calls, 'nothing is sent for a refused URL').toEqual([]);

    fill(url, 'https://mcp.linear.app/mcp');
    fill(target.querySelector('#server-name') as HTMLInputElement, 'linear');
    submit(target);
    await settle();
    expect(calls).toEqual([['add_server', { request: { url: 'https://mcp.linear.app/mcp', name: 'linear', allow_insecure_loopback: false } }]]);
    expect(target.querySelector('[data-testid=add-progress]')?.getAttribute('role')).toBe('status');
    expect(target.querySelector('[data-testid=add-progress]')?.textContent).toContain('https://mcp.linear.app/mcp');
    expect(url.disabled, 'the fields wait while the sign-in runs').toBe(true);
    expect(button(target, 'Signing in…')?.disabled).toBe(true);

    finish(server({}));
    await settle();
    expect(target.querySelector('[role=dialog]'), 'the dialog closes once signed in').toBeNull();
    expect(target.querySelector('[data-testid=servers-notice]')?.textContent).toBe('linear added and signed in.');
    unmount(component);
  });

  it("shows the engine's refusal by its code and message, and adds nothing", async () => {
    const message =
      'the protected-resource metadata of https://mcp.example.com/mcp names another resource (https://evil.example/mcp); Latchkey refuses it (mix-up protection)';
    mockIPC((cmd) => {
      if (cmd === 'add_server') throw { code: 'mcp_oauth_resource_mismatch', message };
      return null;
    });
    const { target, component, changes } = render([]);
    button(target, 'Add MCP server')?.click();
    flushSync();
    const url = target.querySelector('#server-url') as HTMLInputElement;
    fill(url, 'https://mcp.example.com/mcp');
    submit(target);
    await settle();
    const box = target.querySelector('[data-testid=add-error]') as HTMLElement;
    expect(box.getAttribute('role')).toBe('alert');
    expect(box.dataset.code).toBe('mcp_oauth_resource_mismatch');
    expect(box.textContent).toContain('Refused: the metadata is for another server');
    expect(box.textContent).toContain(message);
    expect(target.querySelector('[role=dialog]'), 'the dialog stays open to fix the URL').not.toBeNull();
    expect(url.disabled).toBe(false);
    expect(url.value, 'the URL is kept for editing').toBe('https://mcp.example.com/mcp');
    expect(document.activeElement, 'focus goes back to the URL').toBe(url);
    expect(target.querySelectorAll('[data-testid=server]')).toHaveLength(0);
    expect(changes()).toBeGreaterThan(0);
    unmount(component);
  });

  it('closes the dialog on Escape and gives focus back to Add MCP server', async () => {
    mockIPC(() => null);
    const { target, component } = render([]);
    const add = button(target, 'Add MCP server') as HTMLButtonElement;
    add.focus();
    add.click();
    flushSync();
    const dialog = target.querySelector('[role=dialog]') as HTMLElement;
    dialog.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }));
    await settle();
    expect(target.querySelector('[role=dialog]')).toBeNull();
    expect(document.activeElement).toBe(add);
    unmount(component);
  });

  it('keeps Tab inside the dialog', () => {
    mockIPC(() => null);
    const { target, component } = render([]);
    button(target, 'Add MCP server')?.click();
    flushSync();
    const submitButton = button(target, 'Add and sign in') as HTMLButtonElement;
    submitButton.focus();
    submitButton.dispatchEvent(new KeyboardEvent('keydown', { key: 'Tab', bubbles: true, cancelable: true }));
    expect(document.activeElement, 'Tab from the last control wraps to the URL field').toBe(target.querySelector('#server-url'));
    (target.querySelector('#server-url') as HTMLElement).dispatchEvent(new KeyboardEvent('keydown', { key: 'Tab', shiftKey: true, bubbles: true, cancelable: true }));
    expect(document.activeElement).toBe(submitButton);
    unmount(component);
  });

  it('removes a server only after a confirmation, which Escape cancels', async () => {
    const calls: Array<[string, unknown]> = [];
    mockIPC((cmd, args) => {
      calls.push([cmd, args]);
      return null;
    });
    const { target, component } = render([server({})]);
    const remove = target.querySelector('#remove-linear') as HTMLButtonElement;
    expect(remove.getAttribute('aria-label')).toBe('Remove linear');
    remove.click();
    await settle();
    const keep = target.querySelector('#keep-linear') as HTMLButtonElement;
    expect(document.activeElement, 'the safe choice has focus').toBe(keep);
    expect(target.querySelector('[role=group]')?.textContent).toContain('revokes its tokens');
    keep.dispatchEvent(new KeyboardEvent('keydown', { key: 'Escape', bubbles: true }));
    await settle();
    expect(target.querySelector('[role=group]')).toBeNull();
    expect(document.activeElement).toBe(target.querySelector('#remove-linear'));
    expect(calls).toEqual([]);

    (target.querySelector('#remove-linear') as HTMLButtonElement).click();
    await settle();
    button(target, 'Remove linear')?.click();
    await settle();
    expect(calls).toEqual([['remove_server', { name: 'linear' }]]);
    expect(target.querySelector('[data-testid=servers-notice]')?.textContent).toContain('linear removed');
    unmount(component);
  });

  it('asks to allow plain http for a server on this computer, and sends that choice', async () => {
    const calls: Array<[string, unknown]> = [];
    mockIPC((cmd, args) => {
      calls.push([cmd, args]);
      return cmd === 'add_server' ? server({ name: 'local', url: 'http://127.0.0.1:4100/mcp' }) : null;
    });
    const { target, component } = render([]);
    button(target, 'Add MCP server')?.click();
    flushSync();
    fill(target.querySelector('#server-url') as HTMLInputElement, 'http://127.0.0.1:4100/mcp');
    flushSync();
    const allow = [...target.querySelectorAll('label')].find((l) => l.textContent?.includes('Allow plain http'))?.querySelector('input') as HTMLInputElement;
    expect(allow, 'the explicit choice is offered for loopback http only').toBeDefined();
    submit(target);
    expect(target.querySelector('[data-testid=url-problem]')?.textContent).toMatch(/tick "Allow plain http"/);
    expect(calls).toEqual([]);
    allow.click();
    submit(target);
    await settle();
    expect(calls).toEqual([['add_server', { request: { url: 'http://127.0.0.1:4100/mcp', allow_insecure_loopback: true } }]]);
    unmount(component);
  });

  it('asks for a client ID when the engine says one is needed, and sends it on the next try', async () => {
    const calls: Array<[string, unknown]> = [];
    mockIPC((cmd, args) => {
      calls.push([cmd, args]);
      if (cmd === 'add_server' && calls.length === 1) {
        throw { code: 'mcp_oauth_client_id_required', message: 'the authorization server offers no registration: give the client ID it issued for Latchkey' };
      }
      return server({});
    });
    const { target, component } = render([]);
    button(target, 'Add MCP server')?.click();
    flushSync();
    expect(target.querySelector('#server-client-id'), 'not asked before it is needed').toBeNull();
    fill(target.querySelector('#server-url') as HTMLInputElement, 'https://mcp.linear.app/mcp');
    submit(target);
    await settle();
    expect(target.querySelector('[data-testid=add-error]')?.textContent).toContain('A client ID is needed');
    const clientId = target.querySelector('#server-client-id') as HTMLInputElement;
    expect(target.querySelector('label[for=server-client-id]')?.textContent).toBe('Client ID');
    fill(clientId, 'latchkey-desktop');
    submit(target);
    await settle();
    expect(calls[1]).toEqual(['add_server', { request: { url: 'https://mcp.linear.app/mcp', client_id: 'latchkey-desktop', allow_insecure_loopback: false } }]);
    unmount(component);
  });

  it('offers a client secret, scopes and a fixed callback port under More options, checked before sending', async () => {
    const calls: Array<[string, unknown]> = [];
    mockIPC((cmd, args) => {
      calls.push([cmd, args]);
      return cmd === 'add_server' ? server({ name: 'corp' }) : null;
    });
    const { target, component } = render([]);
    button(target, 'Add MCP server')?.click();
    flushSync();
    expect(target.querySelector('#server-client-secret'), 'hidden until asked for').toBeNull();
    (button(target, 'More options…') as HTMLButtonElement).click();
    await settle();
    expect(document.activeElement?.id, 'focus moves to the first field it shows').toBe('server-client-id');
    expect(button(target, 'More options…'), 'shown once').toBeUndefined();
    const secret = target.querySelector('#server-client-secret') as HTMLInputElement;
    expect(secret.type, 'the secret is masked').toBe('password');
    expect(target.querySelector('label[for=server-client-id]')?.textContent).toBe('Client ID');
    fill(target.querySelector('#server-url') as HTMLInputElement, 'https://mcp.corp.example/mcp');

    fill(secret, 'canary-client-secret');
    fill(target.querySelector('#server-callback-port') as HTMLInputElement, '80');
    submit(target);
    expect(target.querySelector('[data-testid=secret-problem]')?.textContent).toMatch(/client ID/);
    expect(target.querySelector('[data-testid=port-problem]')?.textContent).toMatch(/1024 to 65535/);
    expect((target.querySelector('#server-callback-port') as HTMLInputElement).getAttribute('aria-invalid')).toBe('true');
    expect(secret.getAttribute('aria-describedby'), 'the problem is read with the field, in place of its help').toBe('server-client-secret-problem');
    expect(target.querySelector('#server-client-secret-help'), 'the help gives way to the problem').toBeNull();
    await settle();
    expect(document.activeElement, 'focus goes to the first field refused').toBe(secret);
    expect(calls, 'nothing is sent with a field refused').toEqual([]);
    fill(secret, 'canary-client-secret');
    flushSync();
    expect(secret.getAttribute('aria-invalid'), 'typing clears the problem').toBeNull();
    expect(secret.getAttribute('aria-describedby')).toBe('server-client-secret-help');

    fill(target.querySelector('#server-client-id') as HTMLInputElement, 'latchkey-desktop');
    fill(target.querySelector('#server-scopes') as HTMLInputElement, ' read  write,admin ');
    fill(target.querySelector('#server-callback-port') as HTMLInputElement, '33418');
    submit(target);
    await settle();
    expect(calls).toEqual([
      [
        'add_server',
        {
          request: {
            url: 'https://mcp.corp.example/mcp',
            client_id: 'latchkey-desktop',
            client_secret: 'canary-client-secret',
            scopes: ['read', 'write', 'admin'],
            callback_port: 33418,
            allow_insecure_loopback: false,
          },
        },
      ],
    ]);
    expect(target.textContent, 'the secret is never shown back').not.toContain('canary-client-secret');
    unmount(component);
  });

  it('shows why the last login of a server failed, titled by its code', () => {
    mockIPC(() => null);
    const message = 'the authorization server refused the token request (invalid_client); remove the server and add it again';
    const { target, component } = render([
      server({ state: 'needs_login', message, last_login_error: { code: 'mcp_oauth_token_request_failed', message, at: 990 } }),
    ]);
    const box = target.querySelector('[data-testid=server-login-error]') as HTMLElement;
    expect(box.dataset.code).toBe('mcp_oauth_token_request_failed');
    expect(box.getAttribute('role')).toBe('alert');
    expect(box.textContent).toContain('The authorization server refused the token request');
    expect(box.textContent).toContain(message);
    expect(target.querySelector('[data-testid=server-message]'), 'the same sentence is not repeated').toBeNull();
    unmount(component);
  });

  it('cancels a sign-in under way, which reads as a cancel, not an alarm', async () => {
    const calls: Array<[string, unknown]> = [];
    let refuse: (e: unknown) => void = () => {};
    mockIPC((cmd, args) => {
      calls.push([cmd, args]);
      if (cmd === 'add_server') return new Promise((_, reject) => (refuse = reject));
      if (cmd === 'cancel_server_login') refuse({ code: 'login_cancelled', message: 'the sign-in to the MCP server `linear` was cancelled' });
      return null;
    });
    const { target, component } = render([server({ state: 'logging_in', issuer: null, expires_at: null })]);
    button(target, 'Add MCP server')?.click();
    flushSync();
    fill(target.querySelector('#server-url') as HTMLInputElement, 'https://mcp.linear.app/mcp');
    submit(target);
    await settle();
    button(target, 'Cancel sign-in')?.click();
    await settle();
    expect(calls.map(([c, a]) => [c, c === 'add_server' ? null : a])).toEqual([
      ['add_server', null],
      ['cancel_server_login', { name: 'linear' }],
    ]);
    const box = target.querySelector('[data-testid=add-error]') as HTMLElement;
    expect(box.dataset.code).toBe('login_cancelled');
    expect(box.className).toContain('tone-idle');
    expect(box.textContent).toContain('Sign-in cancelled');
    unmount(component);
  });

  it('shows a refused removal in the server card', async () => {
    mockIPC((cmd) => {
      if (cmd === 'remove_server') throw { code: 'keychain_unavailable', message: 'No keychain is available; unlock it and try again' };
      return null;
    });
    const { target, component } = render([server({})]);
    (target.querySelector('#remove-linear') as HTMLButtonElement).click();
    await settle();
    button(target, 'Remove linear')?.click();
    await settle();
    const box = target.querySelector('[data-testid=server-error]') as HTMLElement;
    expect(box.dataset.code).toBe('keychain_unavailable');
    expect(box.textContent).toContain('unlock it and try again');
    unmount(component);
  });
});
