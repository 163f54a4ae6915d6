import { describe, expect, it } from 'vitest';
import { checkService, emptyService, serviceRequest, serviceToForm } from './services';

describe('service form', () => {
  it('sends one header mapping for a new service, the prefix kept as typed', () => {
    const v = { ...emptyService('work'), name: ' linear ', upstream: 'https://api.linear.app ' };
    expect(checkService(v, false)).toBeNull();
    expect(serviceRequest(v, false)).toEqual({
      name: 'linear',
      account: 'work',
      source: 'access_token',
      upstream: 'https://api.linear.app',
      allow_loopback_http: false,
      credentials: [{ name: 'access_token', header: 'Authorization', prefix: 'Bearer ' }],
    });
  });

  it('names every missing field before sending', () => {
    const v = { ...emptyService(''), source: 'gateway' as const, credential: '', ttl_seconds: '0' };
    expect(Object.keys(checkService(v, false) ?? {}).sort()).toEqual(
      ['account', 'credentials', 'gateway_endpoint', 'name', 'ttl_seconds', 'upstream'],
    );
    const q = { ...emptyService('w'), name: 'n', upstream: 'https://u', inject: 'query' as const };
    expect(checkService(q, false)?.credentials).toMatch(/query parameter/);
  });

  it('an edit leaves a blank mapping and endpoint as written', () => {
    const v = serviceToForm({
      name: 'gh', account: 'work', upstream: 'https://api.github.com/', source: 'gateway', state: 'fresh',
      fetched_at: null, expires_at: null, ttl_seconds: 600, message: null,
    });
    expect(checkService(v, true)).toBeNull();
    const request = serviceRequest(v, true);
    expect(request.credentials).toBeUndefined();
    expect(request.gateway_endpoint).toBeUndefined();
    expect(request.ttl_seconds).toBe(600);
  });
});
