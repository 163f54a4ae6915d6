// How the window reads a failed login: matched on the runtime's stable code, never on its text.
// The message (which says what to fix) is shown as the runtime wrote it.
import type { LoginFailure } from './types';

export interface LoginFailureView {
  /** A short heading. */
  title: string;
  /** `idle` for a cancel (the person's own choice), `bad` for everything else. */
  tone: 'idle' | 'bad';
}

/** Codes that mean the person cancelled or declined: shown, but not as an alarm. */
export const CANCEL_CODES: readonly string[] = ['access_denied', 'login_cancelled'];

const TITLES: Record<string, string> = {
  access_denied: 'Sign-in cancelled or declined',
  login_cancelled: 'Sign-in cancelled',
  redirect_uri_not_registered: 'Redirect URI not registered at the provider',
  client_not_registered: 'Client id not accepted by the provider',
  client_auth_failed: "The provider did not accept the client's authentication",
  client_secret_missing: 'The client secret is missing',
  authorization_failed: 'The provider refused the sign-in',
  token_request_failed: 'The provider refused the token request',
  idp_unreachable: 'The identity provider is unreachable',
  idp_timeout: 'The identity provider did not answer',
  idp_discovery_failed: "The identity provider's setup is unusable",
  idp_unsupported: "The identity provider's setup is unusable",
  jwks_unavailable: "Cannot fetch the provider's keys",
  login_expired: 'The login took too long',
  login_timeout: 'The login took too long',
  callback_listener_failed: 'The callback port is taken',
};

/** The heading and tone for a failed login. */
export function loginFailureView(failure: LoginFailure): LoginFailureView {
  const tone = CANCEL_CODES.includes(failure.code) ? 'idle' : 'bad';
  const title =
    TITLES[failure.code] ??
    (failure.code.startsWith('jwt_')
      ? 'A token from the provider was rejected'
      : failure.code.startsWith('keychain_')
        ? 'The keychain failed'
        : 'Login failed');
  return { title, tone };
}
