// First-run setup (`src-tauri/src/setup.rs`, `crates/core/src/config/init.rs`): the form's
// types, the error's field, and the checks made before anything is sent.

import type { Code, ConnectForm, Draft, SetupError, Written } from './types';

// The commands' types are generated from the Rust ones (./generated/): `ConnectForm` is what
// *Connect to your organisation* sends, `SetupError` what a step rejects with (`field` names the
// form field it is about).
export type { ConnectForm, SetupError };

/** A configuration ready to be written, and what it holds (`Draft`). */
export type SetupDraft = Draft;

/** Where the file went (`Written`). */
export type SetupWritten = Written;

/** Turns a rejection into a [`SetupError`]. */
export function asSetupError(e: unknown): SetupError {
  if (e && typeof e === 'object' && 'code' in e && 'message' in e) {
    const field = 'field' in e && typeof e.field === 'string' ? e.field : null;
    // The code comes from the Rust side, whose type it is (./generated/Code).
    return { code: String(e.code) as Code, message: String(e.message), field };
  }
  return { code: 'internal', message: typeof e === 'string' ? e : 'Something went wrong.', field: null };
}

/** True for an http:// URL on this computer (where plain http may be allowed explicitly). */
export function isLoopbackHttp(text: string): boolean {
  try {
    const url = new URL(text.trim());
    return url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
  } catch {
    return false;
  }
}

/** Checks made before discovery runs; the core checks again. `null` when nothing is wrong. */
export function checkConnect(form: ConnectForm): Partial<Record<'issuer' | 'client_id' | 'gateway_url', string>> | null {
  const problems: Partial<Record<'issuer' | 'client_id' | 'gateway_url', string>> = {};
  const url = (name: 'issuer' | 'gateway_url', text: string, label: string) => {
    let parsed: URL;
    try {
      parsed = new URL(text.trim());
    } catch {
      problems[name] = `Enter the ${label} as https://host/…`;
      return;
    }
    if (parsed.protocol === 'https:') return;
    if (isLoopbackHttp(text)) {
      if (!form.allow_insecure_http) problems[name] = `Plain http:// is for a provider on this computer only: tick "Allow plain http", or use https://.`;
      return;
    }
    problems[name] = `The ${label} must use https://.`;
  };
  if (!form.issuer.trim()) problems.issuer = 'Enter the issuer URL your administrator gave you.';
  else url('issuer', form.issuer, 'issuer URL');
  if (!form.client_id.trim()) problems.client_id = 'Enter the client ID registered for Latchkey.';
  if (form.gateway_url?.trim()) url('gateway_url', form.gateway_url, 'Auth Gateway URL');
  return Object.keys(problems).length ? problems : null;
}
