// What the MCP servers section shows and checks, as pure functions: the URL a person pastes is
// checked here before anything is sent, and a server's state becomes a badge and an action (a
// refused add or login is titled in ./failures).
import { badge, type Badge } from './badges';
import type { ServerState, ServerView } from './types';

/** The outcome of checking a pasted URL: the URL to send, or why not. */
export type UrlCheck = { ok: true; url: string; loopbackHttp: boolean } | { ok: false; message: string };

const LOOPBACK_HOSTS = new Set(['localhost', '[::1]']);

/** True for `localhost`, `[::1]` and `127.0.0.0/8`. */
export function isLoopbackHost(hostname: string): boolean {
  return LOOPBACK_HOSTS.has(hostname) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/**
 * Checks a remote MCP server's URL before it is sent: `https://`, or `http://` on this computer
 * only (`loopbackHttp`: the person must allow it explicitly, as Latchkey's configuration does);
 * no user name, password or fragment.
 */
export function checkServerUrl(input: string): UrlCheck {
  const raw = input.trim();
  if (!raw) return { ok: false, message: "Paste the MCP server's URL, e.g. https://mcp.example.com/mcp." };
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, message: 'This is not a URL. It starts with https://, e.g. https://mcp.example.com/mcp.' };
  }
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
    return { ok: false, message: 'Use https://. Plain http:// is accepted only for a server on this computer (127.0.0.1, localhost).' };
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return { ok: false, message: `Use an https:// URL (not ${url.protocol}).` };
  }
  if (url.username || url.password) {
    return { ok: false, message: 'Remove the user name and password from the URL: Latchkey signs in for you.' };
  }
  if (url.hash) return { ok: false, message: 'Remove the #fragment from the URL.' };
  return { ok: true, url: raw, loopbackHttp: url.protocol === 'http:' };
}

/** An optional name: empty (Latchkey derives one) or 1–64 letters, digits, `.`, `_`, `-`. */
export function checkServerName(input: string): string | null {
  const name = input.trim();
  if (!name || /^[A-Za-z0-9._-]{1,64}$/.test(name)) return null;
  return 'Use 1–64 letters, digits, ".", "_" or "-" (it becomes the proxy path /<name>/).';
}

/** The outcome of checking the optional callback port: the port (or none), or why not. */
export type PortCheck = { ok: true; port: number | undefined } | { ok: false; message: string };

/**
 * An optional fixed callback port: empty, or a whole number from 1024 to 65535 (a lower port
 * needs administrator rights to listen on).
 */
export function checkCallbackPort(input: string): PortCheck {
  const raw = input.trim();
  if (!raw) return { ok: true, port: undefined };
  const port = Number(raw);
  if (!/^\d{1,5}$/.test(raw) || port < 1024 || port > 65535) {
    return { ok: false, message: 'Use a port from 1024 to 65535: the one in the redirect URI registered for Latchkey.' };
  }
  return { ok: true, port };
}

/** Scopes typed as the provider lists them (spaces or commas between): none means the advertised ones. */
export function parseScopes(input: string): string[] | undefined {
  const scopes = input.split(/[\s,]+/).filter((s) => s !== '');
  return scopes.length ? scopes : undefined;
}

/** The badge for a server's state at `now`, with the tray's icon for it (a server that needs a
 *  login is the tray's "log in again"). */
export function serverBadge(server: ServerView, now: number): Badge {
  switch (server.state) {
    case 'ready':
      return server.expires_at !== null && server.expires_at <= now ? badge('Renewing', 'active') : badge('Ready', 'active');
    case 'needs_login':
      return badge('Log in needed', 'expired');
    case 'needs_step_up':
      return badge('More access needed', 'expiring');
    case 'logging_in':
      return badge('Signing in…', 'logged_out');
    case 'failing':
      return badge('Failing', 'error');
  }
}

/** What the person can do about a server in `state`: the button's label, or nothing. */
export function serverAction(state: ServerState): string | null {
  switch (state) {
    case 'needs_login':
    case 'failing':
      return 'Log in';
    case 'needs_step_up':
      return 'Grant more access';
    case 'ready':
    case 'logging_in':
      return null;
  }
}

/** The server being signed in to for a pasted URL, as the overview lists it while it is added. */
export function pendingServer(servers: readonly ServerView[], url: string): ServerView | undefined {
  let wanted: string;
  try {
    wanted = new URL(url).href;
  } catch {
    return undefined;
  }
  return servers.find((s) => s.state === 'logging_in' && s.url === wanted);
}

/** "ready" servers summed up for a line like the tray's: "3 MCP servers ready". */
export function readySummary(servers: readonly ServerView[]): string | null {
  const n = servers.filter((s) => s.state === 'ready').length;
  if (n === 0) return null;
  return n === 1 ? '1 MCP server ready' : `${n} MCP servers ready`;
}
