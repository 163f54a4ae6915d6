import { describe, expect, it } from 'vitest';
import { checkCallbackPort, checkServerName, checkServerUrl, isLoopbackHost, parseScopes, pendingServer, readySummary, serverAction, serverBadge } from './servers';
import type { ServerView } from './types';

const server = (over: Partial<ServerView>): ServerView => ({
  name: 'linear',
  url: 'https://mcp.linear.app/mcp',
  issuer: 'https://mcp.linear.app',
  state: 'ready',
  expires_at: 4600,
  scopes: ['read'],
  message: null,
  proxy_url: 'http://127.0.0.1:47821/linear/mcp',
  last_login_error: null,
  login_requested: null,
  ...over,
});

describe('checkServerUrl', () => {
  it('accepts https and keeps what was pasted, trimmed', () => {
    expect(checkServerUrl('  https://mcp.example.com/mcp \n')).toEqual({ ok: true, url: 'https://mcp.example.com/mcp', loopbackHttp: false });
  });

  it('accepts plain http only on this computer', () => {
    for (const url of ['http://127.0.0.1:8123/mcp', 'http://localhost:3000/mcp', 'http://[::1]:9000/mcp', 'http://127.10.0.2/mcp']) {
      expect(checkServerUrl(url), url).toEqual({ ok: true, url, loopbackHttp: true });
    }
    const remote = checkServerUrl('http://mcp.example.com/mcp');
    expect(remote.ok).toBe(false);
    expect(!remote.ok && remote.message).toMatch(/Use https:\/\//);
    expect(checkServerUrl('http://127.0.0.1.evil.example/mcp').ok, 'a name that only starts like a loopback address').toBe(false);
  });

  it('refuses what is not an http(s) URL, or carries credentials or a fragment', () => {
    for (const bad of ['', '   ', 'mcp.example.com', 'javascript:alert(1)', 'file:///etc/passwd', 'ftp://mcp.example.com/', 'https://user:pw@mcp.example.com/mcp', 'https://mcp.example.com/mcp#x']) {
      expect(checkServerUrl(bad).ok, bad).toBe(false);
    }
  });

  it('knows loopback hosts', () => {
    expect(isLoopbackHost('127.0.0.1')).toBe(true);
    expect(isLoopbackHost('[::1]')).toBe(true);
    expect(isLoopbackHost('localhost')).toBe(true);
    expect(isLoopbackHost('128.0.0.1')).toBe(false);
    expect(isLoopbackHost('localhost.example')).toBe(false);
  });
});

describe('checkServerName', () => {
  it('allows no name or a proxy-path-safe one', () => {
    expect(checkServerName('')).toBeNull();
    expect(checkServerName('linear')).toBeNull();
    expect(checkServerName('my.server_2-x')).toBeNull();
    expect(checkServerName('with space')).toMatch(/letters, digits/);
    expect(checkServerName('a/b')).not.toBeNull();
    expect(checkServerName('x'.repeat(65))).not.toBeNull();
  });
});

describe('checkCallbackPort', () => {
  it('allows none, or a whole port a person may listen on', () => {
    expect(checkCallbackPort('')).toEqual({ ok: true, port: undefined });
    expect(checkCallbackPort(' 33418 ')).toEqual({ ok: true, port: 33418 });
    expect(checkCallbackPort('1024')).toEqual({ ok: true, port: 1024 });
    expect(checkCallbackPort('65535')).toEqual({ ok: true, port: 65535 });
  });
  it('refuses privileged, out-of-range and non-numeric ports', () => {
    for (const bad of ['80', '1023', '65536', '0', '-1', '33418.5', '1e4', 'abc', '123456']) {
      expect(checkCallbackPort(bad).ok, bad).toBe(false);
    }
  });
});

describe('parseScopes', () => {
  it('splits on spaces and commas, and leaves none for the advertised ones', () => {
    expect(parseScopes(' read  write,admin ')).toEqual(['read', 'write', 'admin']);
    expect(parseScopes('   ')).toBeUndefined();
    expect(parseScopes('')).toBeUndefined();
  });
});

describe('serverBadge and serverAction', () => {
  it('reads each state with its action', () => {
    expect(serverBadge(server({}), 1000)).toEqual({ label: 'Ready', icon: 'active', tone: 'ok' });
    expect(serverBadge(server({ expires_at: 900 }), 1000).label, 'past expiry, refresh is under way').toBe('Renewing');
    expect(serverBadge(server({ expires_at: null }), 1000).label).toBe('Ready');
    expect(serverBadge(server({ state: 'needs_login' }), 1000)).toEqual({ label: 'Log in needed', icon: 'expired', tone: 'bad' });
    expect(serverBadge(server({ state: 'needs_step_up' }), 1000)).toEqual({ label: 'More access needed', icon: 'expiring', tone: 'warn' });
    expect(serverBadge(server({ state: 'logging_in' }), 1000).label).toBe('Signing in…');
    expect(serverBadge(server({ state: 'failing' }), 1000).tone).toBe('bad');
    expect(serverAction('needs_login')).toBe('Log in');
    expect(serverAction('needs_step_up')).toBe('Grant more access');
    expect(serverAction('failing')).toBe('Log in');
    expect(serverAction('ready')).toBeNull();
    expect(serverAction('logging_in')).toBeNull();
  });
});

describe('readySummary', () => {
  it('counts ready servers in one line', () => {
    expect(readySummary([])).toBeNull();
    expect(readySummary([server({ state: 'needs_login' })])).toBeNull();
    expect(readySummary([server({})])).toBe('1 MCP server ready');
    expect(readySummary([server({ name: 'a' }), server({ name: 'b' }), server({ name: 'c' }), server({ name: 'd', state: 'needs_step_up' })])).toBe('3 MCP servers ready');
  });
});

describe('pendingServer', () => {
  it('finds the server being added for the URL pasted, as the runtime spells it', () => {
    const adding = server({ name: 'mcp', url: 'http://127.0.0.1:4100/', state: 'logging_in' });
    expect(pendingServer([server({}), adding], 'http://127.0.0.1:4100')).toBe(adding);
    expect(pendingServer([server({ state: 'ready', url: 'http://127.0.0.1:4100/' })], 'http://127.0.0.1:4100')).toBeUndefined();
    expect(pendingServer([adding], 'not a url')).toBeUndefined();
  });
});
