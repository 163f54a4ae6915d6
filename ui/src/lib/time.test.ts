import { describe, expect, it } from 'vitest';
import { credentialBadge, formatAgo, formatBytes, formatRemaining, isExpiringSoon, sessionBadge } from './time';

const user = { subject: 'alice', name: 'Alice', email: 'alice@example.test' };

describe('formatRemaining', () => {
  it('reads like a person would say it', () => {
    expect(formatRemaining(41 * 60 + 12)).toBe('41 min 12 s');
    expect(formatRemaining(2 * 3600 + 5 * 60)).toBe('2 h 05 min');
    expect(formatRemaining(12)).toBe('12 s');
    expect(formatRemaining(0)).toBe('expired');
    expect(formatRemaining(-5)).toBe('expired');
  });
});

describe('expiring soon', () => {
  it('is the last ten minutes or the last tenth of the lifetime', () => {
    expect(isExpiringSoon(0, 3600, 3000)).toBe(true); // 10 min left
    expect(isExpiringSoon(0, 3600, 2000)).toBe(false);
    expect(isExpiringSoon(0, 86400, 86400 - 8000)).toBe(true); // < 10 %
    expect(isExpiringSoon(0, 86400, 1000)).toBe(false);
  });

  it('drives the session badge', () => {
    const active = { kind: 'active' as const, user, issued_at: 0, expires_at: 3600, renewable: true };
    expect(sessionBadge(active, 100)).toEqual({ label: 'Active', icon: 'active', tone: 'ok' });
    expect(sessionBadge(active, 3300)).toEqual({ label: 'Expiring soon', icon: 'expiring', tone: 'warn' });
    expect(sessionBadge({ kind: 'expired', user, reason: 'log in again' }, 0).tone).toBe('bad');
    expect(sessionBadge({ kind: 'logged_out' }, 0).label).toBe('Signed out');
    expect(sessionBadge({ kind: 'error', code: 'keychain_unavailable', message: 'x' }, 0).tone).toBe('bad');
  });
});

describe('credential badges', () => {
  it('say when a credential is served from the cache because the gateway is down', () => {
    expect(credentialBadge('cached')).toEqual({ label: 'Cached (gateway down)', icon: 'expiring', tone: 'warn' });
    expect(credentialBadge('forbidden').tone).toBe('bad');
    expect(credentialBadge('fresh').tone).toBe('ok');
  });
});

describe('formatting', () => {
  it('formats ages and sizes', () => {
    expect(formatAgo(null, 100)).toBe('never');
    expect(formatAgo(90, 100)).toBe('just now');
    expect(formatAgo(0, 600)).toBe('10 min ago');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1234)).toBe('1.2 kB');
  });
});
