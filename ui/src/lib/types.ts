// The IPC contract: mirrors crates/runtime/src/view.rs (snake_case, unix seconds).

export interface UserInfo {
  subject: string;
  name: string | null;
  email: string | null;
}

export type SessionState =
  | { kind: 'logged_out' }
  | { kind: 'logging_in' }
  | { kind: 'active'; user: UserInfo; expires_at: number; issued_at: number; renewable: boolean }
  | { kind: 'refreshing'; user: UserInfo; expires_at: number }
  | { kind: 'expired'; user: UserInfo | null; reason: string }
  | { kind: 'error'; code: string; message: string };

export type CredentialState = 'fresh' | 'cached' | 'stale' | 'missing' | 'forbidden' | 'not_fetched' | 'error';

export interface ServiceStatus {
  name: string;
  account: string;
  upstream: string;
  source: 'gateway' | 'access_token' | 'manual';
  state: CredentialState;
  fetched_at: number | null;
  expires_at: number | null;
  ttl_seconds: number;
  message: string | null;
}

/** Why an account's last login failed (`crates/runtime/src/view.rs` `LoginFailure`). */
export interface LoginFailure {
  code: string;
  message: string;
  at: number;
}

export interface AccountView {
  name: string;
  issuer: string;
  state: SessionState;
  /** Until the next login starts or one succeeds. */
  last_login_error: LoginFailure | null;
  /** The latest request refused because nobody is logged in, until a login succeeds. */
  login_requested: LoginRequest | null;
}

/** A local client asked for a service of an account nobody is logged in to. */
export interface LoginRequest {
  client: string;
  service: string;
  at: number;
}

export interface Overview {
  accounts: AccountView[];
  services: ServiceStatus[];
  /** Remote MCP servers Latchkey is the OAuth client of. */
  servers: ServerView[];
  proxy: { url: string; listening: boolean; error: string | null };
  keychain: { ok: boolean; backend: string; message: string | null };
  now: number;
  /** The configuration file: missing on a first run (the window shows Setup), invalid with its line. */
  config?: ConfigState;
}

/** `crates/runtime/src/view.rs` config state. */
export interface ConfigState {
  state: 'missing' | 'invalid' | 'loaded';
  path: string;
  error?: { line: number; message: string } | null;
}

/** Where a remote MCP server's login stands (`crates/runtime/src/view.rs` `ServerView::state`). */
export type ServerState = 'ready' | 'needs_login' | 'needs_step_up' | 'logging_in' | 'failing';

/** A remote MCP server that speaks OAuth; Latchkey holds its tokens, the window sees none. */
export interface ServerView {
  /** Its name, the proxy path `/<name>/…`. */
  name: string;
  /** The server's URL (its resource identifier). */
  url: string;
  /** Where hosts reach it through Latchkey's proxy. */
  proxy_url: string;
  /** Its authorization server, once discovered. */
  issuer: string | null;
  state: ServerState;
  /** When the access token expires, unix seconds (refreshed before). */
  expires_at: number | null;
  /** Scopes granted. */
  scopes: string[];
  /** What to do when not ready, or why the last login failed, with the fix. */
  message: string | null;
  /** Why the last login failed, until the next one starts or one succeeds. */
  last_login_error: LoginFailure | null;
  /** The latest request a host made while it needed a login or more access, until a login. */
  login_requested?: LoginRequest | null;
}

/** What *Add MCP server* sends (`src-tauri/src/commands.rs` `AddServerRequest`). */
export interface AddServerRequest {
  url: string;
  name?: string;
  /** A client ID registered beforehand, when the authorization server offers no registration. */
  client_id?: string;
  /** Plain http:// on this computer, allowed explicitly. */
  allow_insecure_loopback?: boolean;
}

export interface ClientView {
  name: string;
  services: string[];
  created_at: number;
  last_used_at: number | null;
  /** May read its services' raw credentials (`latchkey client add --allow-raw-credentials`). */
  raw_credentials: boolean;
}

export interface CreatedClient {
  client: ClientView;
  token: string;
}

export interface AuditRow {
  id: number;
  /** When the request started, unix milliseconds (`latchkey_store::AuditRow::time`). */
  time: number;
  client: string | null;
  service: string | null;
  method: string;
  path: string;
  status: number;
  bytes_in: number;
  bytes_out: number;
  duration_ms: number;
  error_code: string | null;
}

export interface AuditPage {
  rows: AuditRow[];
  next_before_id: number | null;
}

export type StatusClass = 'ok' | 'client_error' | 'server_error';

/** One service's counts per bucket, oldest first (`latchkey_store::ServiceSeries`). */
export interface ServiceSeries {
  service: string | null;
  requests: number[];
  errors: number[];
}

/** Client traffic per service in time buckets (`latchkey_store::ActivityBuckets`; milliseconds). */
export interface ActivityBuckets {
  start_ms: number;
  bucket_ms: number;
  series: ServiceSeries[];
}

/** The Activity chart's span: the last hour by minute, or the last day by hour. */
export type ActivitySpan = 'hour' | 'day';

export interface ActivityFilter {
  client?: string;
  service?: string;
  status?: StatusClass;
  before_id?: number;
  limit: number;
}

export interface ConnectionView {
  id: string;
  client: string;
  service: string;
  kind: 'http' | 'sse' | 'websocket';
  started_at: number;
  last_activity_at: number;
  bytes_in: number;
  bytes_out: number;
  events: number;
}

export type HostId = 'claude-desktop' | 'cursor' | 'vscode' | 'claude-code';

export interface HostView {
  id: HostId;
  name: string;
  config_path: string;
  installed: boolean;
  status: 'ok' | 'missing' | 'malformed';
  error: string | null;
  servers: string[];
  can_undo: boolean;
}

export interface HostPreview {
  host: HostId;
  config_path: string;
  server_name: string;
  entry_json: string;
  replaces_existing: boolean;
}

export interface HostApplied {
  host: HostId;
  config_path: string;
  backup_path: string | null;
  server_name: string;
}

export interface Settings {
  proxy_port: number | null;
  use_system_browser: boolean;
  notifications: boolean;
  start_at_login: boolean;
}

/** Every command rejects with this. */
export interface CommandError {
  code: string;
  message: string;
}
