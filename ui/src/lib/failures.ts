// How the window reads a failure: a heading matched on the runtime's stable code, never on its
// text, and a tone from the code's class as Rust decides it (`CODE_CLASS`, generated from
// crates/core/src/code.rs). The tables are typed by the generated `Code`, so a misspelt or removed
// code fails `npm run check`. The message, which says what to fix, is shown as the runtime wrote it.
import { CODE_CLASS } from './generated/codeClasses';
import type { Code, CommandError, LoginFailure } from './types';

/** `idle` for a cancel (the person's own choice), `bad` for everything else. */
export type Tone = 'idle' | 'bad';

/** How a failure reads: a short heading and whether it is an alarm. */
export interface FailureView {
  /** A short heading. */
  title: string;
  tone: Tone;
}

/** A cancel or a decline is shown, but not as an alarm. */
export function failureTone(code: Code): Tone {
  return CODE_CLASS[code] === 'cancelled' ? 'idle' : 'bad';
}

const TOKEN_REJECTED = 'A token from the provider was rejected';
const UNUSABLE_SETUP = "The identity provider's setup is unusable";

/** Headings of an account's failed login. */
const LOGIN_TITLES: Partial<Record<Code, string>> = {
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
  idp_discovery_failed: UNUSABLE_SETUP,
  idp_unsupported: UNUSABLE_SETUP,
  jwks_unavailable: "Cannot fetch the provider's keys",
  login_expired: 'The login took too long',
  login_timeout: 'The login took too long',
  callback_listener_failed: 'The callback port is taken',
  access_token_not_jwt: TOKEN_REJECTED,
  jwt_malformed: TOKEN_REJECTED,
  jwt_unsigned: TOKEN_REJECTED,
  jwt_algorithm_mismatch: TOKEN_REJECTED,
  jwt_unsupported_key: TOKEN_REJECTED,
  jwt_unknown_key: TOKEN_REJECTED,
  jwt_bad_signature: TOKEN_REJECTED,
  jwt_wrong_issuer: TOKEN_REJECTED,
  jwt_wrong_audience: TOKEN_REJECTED,
  jwt_expired: TOKEN_REJECTED,
  jwt_not_yet_valid: TOKEN_REJECTED,
  jwt_missing_claim: TOKEN_REJECTED,
  jwt_bad_claim: TOKEN_REJECTED,
  jwt_wrong_azp: TOKEN_REJECTED,
  jwt_nonce_mismatch: TOKEN_REJECTED,
};

/** The heading and tone for an account's failed login. */
export function loginFailureView(failure: LoginFailure): FailureView {
  const title = LOGIN_TITLES[failure.code] ?? (CODE_CLASS[failure.code] === 'keychain' ? 'The keychain failed' : 'Login failed');
  return { title, tone: failureTone(failure.code) };
}

const UNTRUSTWORTHY = 'Refused: the sign-in answer cannot be trusted';

/** Headings of a refused add or login of a remote MCP server. */
const SERVER_TITLES: Partial<Record<Code, string>> = {
  mcp_oauth_invalid_server_url: 'Not a usable MCP server URL',
  mcp_oauth_insecure_url: 'Refused: not https',
  mcp_oauth_redirect_refused: 'Refused: redirected to another site',
  mcp_oauth_document_too_large: "The server's OAuth metadata is unusable",
  mcp_oauth_document_malformed: "The server's OAuth metadata is unusable",
  mcp_oauth_resource_mismatch: 'Refused: the metadata is for another server',
  mcp_oauth_issuer_mismatch: 'Refused: the authorization server names another issuer',
  mcp_oauth_bad_authorization_endpoint: 'Refused: unsafe sign-in address',
  mcp_oauth_pkce_unsupported: 'The authorization server does not support PKCE',
  mcp_oauth_resource_metadata_not_found: 'No OAuth metadata found for this server',
  mcp_oauth_no_authorization_server: 'The server names no authorization server',
  mcp_oauth_authorization_server_metadata_not_found: "The authorization server's metadata is missing",
  mcp_oauth_not_required: 'This server needs no sign-in',
  mcp_oauth_unexpected_status: 'Unexpected answer from the server',
  mcp_oauth_unreachable: 'The server is unreachable',
  mcp_oauth_timeout: 'The server did not answer',
  mcp_oauth_client_id_required: 'A client ID is needed',
  mcp_oauth_registration_refused: 'The authorization server refused to register Latchkey',
  mcp_oauth_registration_without_client_id: 'Refused: the registration gave no client ID',
  mcp_oauth_callback_listener_failed: 'The callback port is taken',
  mcp_oauth_access_denied: 'Sign-in cancelled or declined',
  mcp_oauth_login_cancelled: 'Sign-in cancelled',
  login_cancelled: 'Sign-in cancelled',
  mcp_oauth_authorization_failed: 'The authorization server refused the sign-in',
  mcp_oauth_callback_malformed: UNTRUSTWORTHY,
  mcp_oauth_iss_mismatch: UNTRUSTWORTHY,
  mcp_oauth_iss_missing: UNTRUSTWORTHY,
  mcp_oauth_login_expired: 'The sign-in took too long',
  mcp_oauth_login_required: 'Log in again',
  mcp_oauth_token_request_failed: 'The authorization server refused the token request',
  mcp_oauth_token_wrong_resource: 'Refused: a token for another server',
  server_exists: 'A server of that name exists',
  browser_unavailable: 'Cannot open your browser',
  window_failed: 'Cannot open the sign-in window',
};

/** The heading and tone for a refused add or login of a remote MCP server. */
export function serverFailureView(error: CommandError): FailureView {
  return { title: SERVER_TITLES[error.code] ?? 'Could not add the MCP server', tone: failureTone(error.code) };
}

/** Headings of a failed first-run setup step. */
const SETUP_TITLES: Partial<Record<Code, string>> = {
  issuer_mismatch: 'The provider names another issuer',
  idp_unreachable: 'The provider cannot be reached',
  idp_timeout: 'The provider cannot be reached',
  idp_discovery_failed: 'No OpenID Connect provider at this address',
  client_not_registered: 'The provider does not know this client ID',
  redirect_uri_not_registered: 'The provider refuses Latchkey’s redirect URI',
  config_invalid: 'This configuration has a mistake',
  config_exists: 'A configuration exists already',
  import_unreachable: 'The configuration could not be fetched',
};

/** A heading for a failed setup step, by code. */
export function setupFailureTitle(code: Code): string {
  return SETUP_TITLES[code] ?? 'Setup failed';
}
