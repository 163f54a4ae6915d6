// Pure helpers for what the window shows about time and state; unit-tested.
import type { CredentialState, SessionState } from './types';

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

export interface Badge {
  label: string;
  tone: 'ok' | 'warn' | 'bad' | 'idle';
}

/** The session badge for a state at `now`. */
export function sessionBadge(state: SessionState, now: number): Badge {
  switch (state.kind) {
    case 'logged_out':
      return { label: 'Signed out', tone: 'idle' };
    case 'logging_in':
      return { label: 'Signing in…', tone: 'idle' };
    case 'refreshing':
      return { label: 'Renewing', tone: 'ok' };
    case 'active':
      return isExpiringSoon(state.issued_at, state.expires_at, now)
        ? { label: 'Expiring soon', tone: 'warn' }
        : { label: 'Active', tone: 'ok' };
    case 'expired':
      return { label: 'Log in again', tone: 'bad' };
    case 'error':
      return { label: 'Attention needed', tone: 'bad' };
  }
}

/** How a service's credential state reads. */
export function credentialBadge(state: CredentialState): Badge {
  switch (state) {
    case 'fresh':
      return { label: 'Fresh', tone: 'ok' };
    case 'cached':
      return { label: 'Cached (gateway down)', tone: 'warn' };
    case 'stale':
      return { label: 'Stale', tone: 'warn' };
    case 'missing':
      return { label: 'Missing', tone: 'bad' };
    case 'forbidden':
      return { label: 'Not allowed', tone: 'bad' };
    case 'not_fetched':
      return { label: 'Not fetched yet', tone: 'idle' };
    case 'error':
      return { label: 'Error', tone: 'bad' };
  }
}

/** 1234 → "1.2 kB". */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  if (n < 1_000_000) return `${(n / 1000).toFixed(1)} kB`;
  return `${(n / 1_000_000).toFixed(1)} MB`;
}
