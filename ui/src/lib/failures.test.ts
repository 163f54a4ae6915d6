import { describe, expect, it } from 'vitest';
import { failureTone, loginFailureView, serverFailureView, setupFailureTitle } from './failures';
import { CODE_CLASS } from './generated/codeClasses';
import type { Code } from './types';

const failure = (code: Code) => ({ code, message: `message of ${code}`, at: 0 });

describe('loginFailureView', () => {
  it('names each cause by its code', () => {
    expect(loginFailureView(failure('redirect_uri_not_registered'))).toEqual({
      title: 'Redirect URI not registered at the provider',
      tone: 'bad',
    });
    expect(loginFailureView(failure('jwt_wrong_audience')).title).toBe('A token from the provider was rejected');
    expect(loginFailureView(failure('token_request_failed')).tone).toBe('bad');
    expect(loginFailureView(failure('unknown')).title).toBe('Login failed');
  });

  it('titles every rejected token alike, and a keychain failure by its class', () => {
    const jwt = (Object.keys(CODE_CLASS) as Code[]).filter((c) => c.startsWith('jwt_'));
    expect(jwt.length).toBeGreaterThan(10);
    for (const code of jwt) expect(loginFailureView(failure(code)).title, code).toBe('A token from the provider was rejected');
    expect(loginFailureView(failure('keychain_corrupt')).title).toBe('The keychain failed');
  });

  it('does not alarm about a cancel', () => {
    expect(loginFailureView(failure('access_denied')).tone).toBe('idle');
    expect(loginFailureView(failure('login_cancelled')).tone).toBe('idle');
    expect(loginFailureView(failure('login_timeout')).tone).toBe('bad');
  });
});

describe('serverFailureView', () => {
  it('titles the engine refusal by code, whatever its text', () => {
    expect(serverFailureView({ code: 'mcp_oauth_resource_mismatch', message: 'anything' })).toEqual({
      title: 'Refused: the metadata is for another server',
      tone: 'bad',
    });
    expect(serverFailureView({ code: 'mcp_oauth_insecure_url', message: '' }).title).toBe('Refused: not https');
    expect(serverFailureView({ code: 'mcp_oauth_client_id_required', message: '' }).title).toBe('A client ID is needed');
    expect(serverFailureView({ code: 'mcp_oauth_iss_mismatch', message: '' }).title).toMatch(/cannot be trusted/);
  });

  it('shows a cancel as no alarm and an unknown code generically', () => {
    expect(serverFailureView({ code: 'mcp_oauth_access_denied', message: '' }).tone).toBe('idle');
    expect(serverFailureView({ code: 'mcp_oauth_login_cancelled', message: '' }).tone).toBe('idle');
    expect(serverFailureView({ code: 'login_cancelled', message: '' }).tone).toBe('idle');
    expect(serverFailureView({ code: 'unknown', message: 'Access token expired' })).toEqual({ title: 'Could not add the MCP server', tone: 'bad' });
  });
});

describe('setupFailureTitle', () => {
  it('titles a failed step by code', () => {
    expect(setupFailureTitle('issuer_mismatch')).toBe('The provider names another issuer');
    expect(setupFailureTitle('client_not_registered')).toMatch(/client ID/);
    expect(setupFailureTitle('unknown')).toBe('Setup failed');
  });
});

describe('failureTone', () => {
  it('is idle exactly for the codes Rust classes as cancels', () => {
    const idle = (Object.keys(CODE_CLASS) as Code[]).filter((c) => failureTone(c) === 'idle');
    expect(idle).toEqual(['access_denied', 'login_cancelled', 'mcp_oauth_access_denied', 'mcp_oauth_login_cancelled', 'client_closed', 'closed']);
  });
});
