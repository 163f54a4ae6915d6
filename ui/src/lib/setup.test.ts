import { describe, expect, it } from 'vitest';
import { asSetupError, checkConnect, isLoopbackHttp } from './setup';

describe('checkConnect', () => {
  it('asks for https, or an explicit allowance on this computer', () => {
    expect(checkConnect({ issuer: 'https://idp.example.com', client_id: 'latchkey' })).toBeNull();
    expect(checkConnect({ issuer: 'http://idp.example.com', client_id: 'x' })?.issuer).toMatch(/https/);
    expect(checkConnect({ issuer: 'http://127.0.0.1:4000', client_id: 'x' })?.issuer).toMatch(/Allow plain http/);
    expect(checkConnect({ issuer: 'http://127.0.0.1:4000', client_id: 'x', allow_insecure_http: true })).toBeNull();
    expect(checkConnect({ issuer: 'idp.example.com', client_id: 'x' })?.issuer).toMatch(/https:\/\/host/);
  });

  it('names every missing field and checks the optional gateway only when given', () => {
    expect(checkConnect({ issuer: '', client_id: ' ' })).toEqual({
      issuer: 'Enter the issuer URL your administrator gave you.',
      client_id: 'Enter the client ID registered for Latchkey.',
    });
    expect(checkConnect({ issuer: 'https://i.example', client_id: 'x', gateway_url: '' })).toBeNull();
    expect(checkConnect({ issuer: 'https://i.example', client_id: 'x', gateway_url: 'ftp://g' })?.gateway_url).toMatch(/https/);
  });
});

describe('setup errors', () => {
  it('keep the field the core named', () => {
    expect(asSetupError({ code: 'issuer_mismatch', message: 'm', field: 'issuer' }).field).toBe('issuer');
    expect(asSetupError({ code: 'config_invalid', message: 'm' }).field).toBeNull();
    expect(asSetupError('boom')).toEqual({ code: 'internal', message: 'boom', field: null });
  });

  it('recognise http on this computer only', () => {
    expect(isLoopbackHttp('http://127.0.0.1:3000')).toBe(true);
    expect(isLoopbackHttp('http://localhost/x')).toBe(true);
    expect(isLoopbackHttp('http://example.com')).toBe(false);
    expect(isLoopbackHttp('https://127.0.0.1')).toBe(false);
  });
});
