// The only module that talks to the Tauri core. Typed wrappers over `invoke` and `listen`; the
// types are generated from the Rust commands' own (./types.ts, ./generated/).
import { invoke } from '@tauri-apps/api/core';
import { listen, type UnlistenFn } from '@tauri-apps/api/event';
import type {
  ActivityBuckets,
  ActivityFilter,
  ActivitySpan,
  AddServerRequest,
  AuditPage,
  AuditRow,
  ClientView,
  Code,
  CommandError,
  ConnectionView,
  CreatedClient,
  HostApplied,
  HostPreview,
  HostView,
  LoginFailed,
  OpenAt,
  Overview,
  ServerView,
  Settings,
} from './types';
import { asSetupError, type ConnectForm, type SetupDraft, type SetupWritten } from './setup';
import type { ServiceRequest } from './services';

/** Turns whatever a command rejected with into `{code, message}`. */
export function asCommandError(e: unknown): CommandError {
  if (e && typeof e === 'object' && 'code' in e && 'message' in e) {
    // The code comes from the Rust side, whose type it is (./generated/Code).
    return { code: String(e.code) as Code, message: String(e.message) };
  }
  return { code: 'internal', message: typeof e === 'string' ? e : 'Something went wrong.' };
}

async function call<T>(command: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (e) {
    throw asCommandError(e);
  }
}

async function setupCall<T>(command: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (e) {
    throw asSetupError(e);
  }
}

export const ipc = {
  overview: () => call<Overview>('overview'),
  login: (account: string, systemBrowser?: boolean) => call<null>('login', { account, systemBrowser }),
  cancelLogin: (account: string) => call<null>('cancel_login', { account }),
  logout: (account: string) => call<null>('logout', { account }),
  refreshNow: (account: string) => call<null>('refresh_now', { account }),
  listClients: () => call<ClientView[]>('list_clients'),
  createClient: (name: string, services: string[], allowRawCredentials = false) =>
    call<CreatedClient>('create_client', { name, services, allowRawCredentials }),
  revokeClient: (name: string) => call<null>('revoke_client', { name }),
  queryActivity: (filter: ActivityFilter) => call<AuditPage>('query_activity', { filter }),
  activityChart: (span: ActivitySpan) => call<ActivityBuckets>('activity_chart', { span }),
  listConnections: () => call<ConnectionView[]>('list_connections'),
  closeConnection: (id: string) => call<null>('close_connection', { id }),
  detectHosts: () => call<HostView[]>('detect_hosts'),
  previewHostEntry: (host: string, client: string, service: string) =>
    call<HostPreview>('preview_host_entry', { host, client, service }),
  applyHostEntry: (host: string, client: string, service: string) =>
    call<HostApplied>('apply_host_entry', { host, client, service }),
  undoHostEntry: (host: string) => call<null>('undo_host_entry', { host }),
  /** Adds a remote MCP server by URL and signs in; resolves once it is ready, rejects with the engine's error (nothing added). */
  addServer: (request: AddServerRequest, systemBrowser?: boolean) => call<ServerView>('add_server', { request, systemBrowser }),
  /** Logs in to a remote MCP server again, or grants it more access (a step-up). */
  serverLogin: (name: string, systemBrowser?: boolean) => call<null>('server_login', { name, systemBrowser }),
  /** Stops a server's pending sign-in; one being added is forgotten. */
  cancelServerLogin: (name: string) => call<null>('cancel_server_login', { name }),
  /** Removes a remote MCP server: revokes its tokens and forgets it. Resolves with a note when it could not be revoked. */
  removeServer: (name: string) => call<string | null>('remove_server', { name }),
  /** Runs discovery for *Connect to your organisation*; rejects with a `SetupError` naming the field. Nothing is written. */
  setupConnect: (form: ConnectForm) => setupCall<SetupDraft>('setup_connect', { form }),
  /** Fetches and validates a configuration from an https URL. Nothing is written. */
  setupImport: (source: string) => setupCall<SetupDraft>('setup_import', { source }),
  /** Validates configuration text picked from a file or pasted. Nothing is written. */
  setupImportText: (text: string, origin?: string) => setupCall<SetupDraft>('setup_import_text', { text, origin }),
  /** Writes the previewed configuration (validated again); the running instance picks it up. */
  setupSave: (toml: string, force?: boolean) => setupCall<SetupWritten>('setup_save', { toml, force }),
  /** *Services* → *Add*: written to the configuration file (the running instance applies it); rejects with a `SetupError` naming the field, nothing written. */
  serviceAdd: (service: ServiceRequest) => setupCall<null>('service_add', { service }),
  /** *Services* → *Edit* the service named `name` (it may be renamed). */
  serviceEdit: (name: string, service: ServiceRequest) => setupCall<null>('service_edit', { name, service }),
  /** *Services* → *Remove*. */
  serviceRemove: (name: string) => setupCall<null>('service_remove', { name }),
  /** Stores the Auth Gateway API key in the keychain. Write-only: nothing reads it back. */
  setGatewayApiKey: (key: string) => call<null>('set_gateway_api_key', { key }),
  getSettings: () => call<Settings>('get_settings'),
  setSettings: (settings: Settings) => call<Settings>('set_settings', { settings }),
  /** The app's version: the workspace's, which `latchkey --version` prints too (Tauri's app plugin). */
  appVersion: () => call<string>('plugin:app|version'),
};

export const events = {
  onChanged: (f: () => void): Promise<UnlistenFn> => listen('latchkey://changed', () => f()),
  /** A tray line asks the window to show a section and the item in it (a service or MCP server). */
  onOpenSection: (f: (target: OpenAt) => void): Promise<UnlistenFn> =>
    listen<OpenAt>('latchkey://open-section', (e) => f(e.payload)),
  onActivity: (f: (row: AuditRow) => void): Promise<UnlistenFn> =>
    listen<AuditRow>('latchkey://activity', (e) => f(e.payload)),
  onLoginFailed: (f: (e: LoginFailed) => void): Promise<UnlistenFn> =>
    listen<LoginFailed>('latchkey://login-failed', (e) => f(e.payload)),
};
