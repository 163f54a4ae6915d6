import { describe, expect, it } from 'vitest';
import { loginFailureView } from './login';

const failure = (code: string) => ({ code, message: `message of ${code}`, at: 0 });

describe('loginFailureView', () => {
  it('names each cause by its code', () => {
    expect(loginFailureView(failure('redirect_uri_not_registered'))).toEqual({
      title: 'Redirect URI not registered at the provider',
      tone: 'bad',
    });
    expect(loginFailureView(failure('jwt_wrong_audience')).title).toBe('A token from the provider was rejected');
    expect(loginFailureView(failure('token_request_failed')).tone).toBe('bad');
    expect(loginFailureView(failure('something_new')).title).toBe('Login failed');
  });

  it('does not alarm about a cancel', () => {
    expect(loginFailureView(failure('access_denied')).tone).toBe('idle');
    expect(loginFailureView(failure('login_cancelled')).tone).toBe('idle');
  });
});
