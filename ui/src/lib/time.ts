// Pure helpers for what the window shows about time and state; unit-tested.
import { badge, type Badge } from './badges';
import type { CredentialState, SessionState } from './types';

export type { Badge } from './badges';

/** "41 min 12 s", "2 h 05 min", "12 s", "expired". */
export function formatRemaining(seconds: number): string {
  if (seconds <= 0) return 'expired';
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h > 0) return `${h} h ${String(m).padStart(2, '0')} min`;
  if (m > 0) return `${m} min ${r} s`;
  return `${r} s`;
}

/** "just now", "5 min ago", "3 h ago", "2 d ago". */
export function formatAgo(then: number | null, now: number): string {
  if (then === null) return 'never';
  const d = Math.max(0, now - then);
  if (d < 45) return 'just now';
  if (d < 3600) return `${Math.round(d / 60)} min ago`;
  if (d < 86400) return `${Math.round(d / 3600)} h ago`;
  return `${Math.round(d / 86400)} d ago`;
}

/** The tray's rule: the last 10 % of the lifetime or the last 10 minutes. */
export function isExpiringSoon(issuedAt: number, expiresAt: number, now: number): boolean {
  const left = expiresAt - now;
  const lifetime = Math.max(1, expiresAt - issuedAt);
  return left <= 600 || left * 10 <= lifetime;
}

/** The session badge for a state at `now`, with the icon the tray shows for it (`tray_status`). */
export function sessionBadge(state: SessionState, now: number): Badge {
  switch (state.kind) {
    case 'logged_out':
      return badge('Signed out', 'logged_out');
    case 'logging_in':
      return badge('Signing in…', 'logged_out');
    case 'refreshing':
      return badge('Renewing', 'active');
    case 'active':
      return isExpiringSoon(state.issued_at, state.expires_at, now) ? badge('Expiring soon', 'expiring') : badge('Active', 'active');
    case 'expired':
      return badge('Log in again', 'expired');
    case 'error':
      return badge('Attention needed', 'error');
  }
}

/** How a service's credential state reads: served (active), served but aging (expiring), not yet
 *  asked for (logged out), or not to be had (error). */
export function credentialBadge(state: CredentialState): Badge {
  switch (state) {
    case 'fresh':
      return badge('Fresh', 'active');
    case 'cached':
      return badge('Cached (gateway down)', 'expiring');
    case 'stale':
      return badge('Stale', 'expiring');
    case 'missing':
      return badge('Missing', 'error');
    case 'forbidden':
      return badge('Not allowed', 'error');
    case 'not_fetched':
      return badge('Not fetched yet', 'logged_out');
    case 'error':
      return badge('Error', 'error');
  }
}

/** 1234 → "1.2 kB". */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  if (n < 1_000_000) return `${(n / 1000).toFixed(1)} kB`;
  return `${(n / 1_000_000).toFixed(1)} MB`;
}
