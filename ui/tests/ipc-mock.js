// Installed with page.addInitScript before the app loads: a stand-in for Tauri's IPC bridge
// (what @tauri-apps/api/mocks' mockIPC installs), answering the app's commands from realistic
// core payloads with a small state machine. Exposes window.__latchkeyMock for the test.
// Type-checked (svelte-check through ui/tsconfig.json) against the types generated from Rust, so a
// fixture cannot drift from what the real commands return.
// @ts-check
/**
 * @typedef {import('../src/lib/generated').ActivityBuckets} ActivityBuckets
 * @typedef {import('../src/lib/generated').AuditPage} AuditPage
 * @typedef {import('../src/lib/generated').AuditRow} AuditRow
 * @typedef {import('../src/lib/generated').Code} Code
 * @typedef {import('../src/lib/generated').ClientView} ClientView
 * @typedef {import('../src/lib/generated').ConnectionView} ConnectionView
 * @typedef {import('../src/lib/generated').CreatedClient} CreatedClient
 * @typedef {import('../src/lib/generated').HostApplied} HostApplied
 * @typedef {import('../src/lib/generated').HostPreview} HostPreview
 * @typedef {import('../src/lib/generated').HostView} HostView
 * @typedef {import('../src/lib/generated').LoginFailure} LoginFailure
 * @typedef {import('../src/lib/generated').Overview} Overview
 * @typedef {import('../src/lib/generated').RuntimeError} RuntimeError
 * @typedef {import('../src/lib/generated').ServerView} ServerView
 * @typedef {import('../src/lib/generated').SessionState} SessionState
 * @typedef {import('../src/lib/generated').Settings} Settings
 * @typedef {import('../src/lib/generated').UserInfo} UserInfo
 * @typedef {(payload: { event: string, id: number, payload: unknown }) => void} Callback
 * @typedef {{
 *   callbacks: Record<number, Callback>,
 *   metadata: unknown,
 *   transformCallback(cb: Callback | undefined, once: boolean): number,
 *   unregisterCallback(id: number): void,
 *   convertFileSrc(p: string): string,
 *   invoke(cmd: string, args?: Record<string, any>): Promise<unknown>,
 * }} TauriInternals
 */
(() => {
  // What the app reads from `window`: Tauri's bridge, and the test's handle on the state below.
  const bridge = /** @type {Window & typeof globalThis & { __TAURI_INTERNALS__: TauriInternals, __TAURI_EVENT_PLUGIN_INTERNALS__: unknown, __latchkeyMock: unknown }} */ (window);
  const now = () => Math.floor(Date.now() / 1000);
  /** @type {UserInfo} */
  const user = { subject: 'alice', name: 'Alice Example', email: 'alice@example.test' };
  const state = {
    /** @type {SessionState} */
    session: { kind: 'logged_out' },
    // The runtime's `last_login_error`; a test sets `failNextLogin` to {code, message} to make the
    // next login end the way the runtime reports a refused one.
    /** @type {LoginFailure | null} */
    loginError: null,
    /** @type {RuntimeError | null} */
    failNextLogin: null,
    /** @type {ClientView[]} */
    clients: [{ name: 'claude-code', services: ['demo'], created_at: now() - 86400, last_used_at: now() - 120, raw_credentials: false }],
    /** @type {AuditRow[]} */
    activity: [],
    /** @type {HostView[]} */
    hosts: [
      { id: 'claude-desktop', name: 'Claude Desktop', config_path: '/home/alice/.config/Claude/claude_desktop_config.json', installed: true, status: 'ok', error: null, servers: ['filesystem'], can_undo: false },
      { id: 'cursor', name: 'Cursor', config_path: '/home/alice/.cursor/mcp.json', installed: true, status: 'ok', error: null, servers: ['linear'], can_undo: false },
      { id: 'vscode', name: 'VS Code', config_path: '/home/alice/.config/Code/User/mcp.json', installed: true, status: 'malformed', error: 'line 4, column 3: expected `,` or `}` after a value', servers: [], can_undo: false },
      { id: 'claude-code', name: 'Claude Code', config_path: '/home/alice/.claude.json', installed: true, status: 'ok', error: null, servers: [], can_undo: false },
    ],
    /** @type {Settings} */
    settings: { proxy_port: null, use_system_browser: false, notifications: true, start_at_login: false },
    // Remote MCP servers (the runtime's `ServerView`s). A test sets `refuseNextAdd` to
    // {code, message} to have the next add refused as the engine refuses one (nothing added), and
    // `holdServerLogins` to keep sign-ins running until it calls `finishServerLogin()`.
    /** @type {ServerView[]} */
    servers: [
      { name: 'sentry', url: 'https://mcp.sentry.dev/mcp', proxy_url: 'http://127.0.0.1:47821/sentry/mcp', issuer: 'https://sentry.io', state: 'needs_login', expires_at: null, scopes: ['org:read'], message: 'sign in to the MCP server `sentry`: run `latchkey server login sentry` or use Log in in Latchkey\'s window', last_login_error: null, login_requested: null },
      { name: 'stripe', url: 'https://mcp.stripe.com/', proxy_url: 'http://127.0.0.1:47821/stripe', issuer: 'https://access.stripe.com', state: 'needs_step_up', expires_at: now() + 1500, scopes: ['read'], message: 'the MCP server `stripe` needs more permissions (read payments:write): run `latchkey server login stripe` to grant them', last_login_error: null, login_requested: null },
      { name: 'notion', url: 'https://mcp.notion.com/mcp', proxy_url: 'http://127.0.0.1:47821/notion/mcp', issuer: 'https://api.notion.com', state: 'ready', expires_at: now() + 2400, scopes: ['read', 'write'], message: null, last_login_error: null, login_requested: null },
    ],
    /** @type {RuntimeError | null} */
    refuseNextAdd: null,
    /** What the last add sent (a test checks the fields of "More options"). */
    /** @type {import('../src/lib/generated').AddServerRequest | null} */
    lastAddRequest: null,
    holdServerLogins: false,
    /** @type {(() => void)[]} */
    serverLogins: [],
    finishServerLogin() { this.serverLogins.shift()?.(); },
    /** @type {Record<string, number[]>} */
    listeners: {},
    /** @type {string[]} */
    issued: [],
    // Requests the activity log could not record (a test sets it to see the notice).
    activityLost: 0,
  };
  const statuses = [200, 200, 401, 403, 502, 200, 429, 200];
  for (let i = 1; i <= 60; i += 1) {
    const status = statuses[i % statuses.length] ?? 200;
    state.activity.push({ id: i, kind: 'client', time: (now() - (61 - i) * 30) * 1000, client: i % 3 ? 'claude-code' : 'cursor', service: i % 2 ? 'demo' : 'github', method: i % 4 ? 'POST' : 'GET', path: i % 2 ? '/demo/mcp' : '/github/user', status, bytes_in: 120 * i, bytes_out: 900 * i, duration_ms: 10 + i, error_code: status >= 400 ? 'upstream_status' : null });
  }
  const klass = (/** @type {number} */ s) => (s < 400 ? 'ok' : s < 500 ? 'client_error' : 'server_error');
  const emit = (/** @type {string} */ event, /** @type {unknown} */ payload = undefined) => {
    for (const id of state.listeners[event] ?? []) bridge.__TAURI_INTERNALS__.callbacks[id]?.({ event, id, payload });
  };
  /** @returns {Overview} */
  const overview = () => ({
    accounts: [{ name: 'sandbox', issuer: 'http://127.0.0.1:47900', state: state.session, last_login_error: state.loginError, login_requested: null }],
    servers: state.servers.map((s) => ({ ...s })),
    services: [
      { name: 'demo', account: 'sandbox', upstream: 'http://127.0.0.1:47902', source: 'gateway', state: state.session.kind === 'active' ? 'fresh' : 'not_fetched', fetched_at: state.session.kind === 'active' ? now() - 60 : null, expires_at: null, ttl_seconds: 3600, message: null },
      { name: 'github', account: 'sandbox', upstream: 'https://api.github.com', source: 'gateway', state: 'cached', fetched_at: now() - 1800, expires_at: now() + 1800, ttl_seconds: 3600, message: 'the gateway is unavailable; serving the cached credential until it expires' },
    ],
    proxy: { url: 'http://127.0.0.1:47821', listening: true, error: null },
    keychain: { ok: true, backend: 'secret-service', message: null },
    now: now(),
    config: { state: 'loaded', path: '/home/alice/.config/latchkey/config.toml' },
    activity_lost: state.activityLost,
  });
  /** @returns {Promise<never>} */
  const fail = (/** @type {Code} */ code, /** @type {string} */ message) => Promise.reject(/** @satisfies {RuntimeError} */ ({ code, message }));
  // A server's sign-in ends after a moment, or when the test says so (`holdServerLogins`).
  const signIn = (/** @type {ServerView} */ server) => new Promise((resolve) => {
    server.state = 'logging_in';
    emit('latchkey://changed');
    const done = () => {
      Object.assign(server, { state: 'ready', issuer: server.issuer ?? `https://auth.${new URL(server.url).hostname.split('.').slice(-2).join('.')}`, expires_at: now() + 3600, scopes: ['read', 'write'], message: null });
      emit('latchkey://changed');
      resolve({ ...server });
    };
    if (state.holdServerLogins) state.serverLogins.push(done);
    else setTimeout(done, 300);
  });
  /** A seeded host by id; the app asks only for those it was shown. */
  const hostOf = (/** @type {string} */ id) => {
    const host = state.hosts.find((x) => x.id === id);
    if (!host) throw new Error(`no host ${id} in the mock`);
    return host;
  };
  /** @type {Record<string, (args: any) => unknown>} */
  const commands = {
    'plugin:app|version': () => '0.1.0',
    overview: () => overview(),
    login: () => {
      state.session = { kind: 'logging_in' };
      state.loginError = null;
      emit('latchkey://changed');
      const failure = state.failNextLogin;
      state.failNextLogin = null;
      setTimeout(() => {
        if (failure) {
          state.session = { kind: 'logged_out' };
          state.loginError = { ...failure, at: now() };
        } else {
          state.session = { kind: 'active', user, issued_at: now(), expires_at: now() + 3600, renewable: true };
        }
        emit('latchkey://changed');
      }, 300);
      return null;
    },
    cancel_login: () => { state.session = { kind: 'logged_out' }; emit('latchkey://changed'); return null; },
    logout: () => { state.session = { kind: 'logged_out' }; emit('latchkey://changed'); return null; },
    refresh_now: () => (state.session.kind === 'active' ? null : fail('login_required', 'Log in first.')),
    list_clients: () => state.clients,
    /** @param {{ name: string, services: string[], allowRawCredentials?: boolean }} args */
    create_client: ({ name, services, allowRawCredentials }) => {
      if (state.clients.some((c) => c.name === name)) return fail('client_exists', `a client named ${name} exists`);
      /** @type {ClientView} */
      const client = { name, services, created_at: now(), last_used_at: null, raw_credentials: allowRawCredentials === true };
      state.clients.push(client);
      const token = `lk_${Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(36).padStart(2, '0')).join('')}`;
      state.issued.push(token);
      return /** @satisfies {CreatedClient} */ ({ client, token });
    },
    revoke_client: (/** @type {{ name: string }} */ { name }) => { state.clients = state.clients.filter((c) => c.name !== name); return null; },
    /**
     * @param {{ filter: import('../src/lib/generated').ActivityFilter }} args
     * @returns {AuditPage}
     */
    query_activity: ({ filter }) => {
      const rows = state.activity
        .filter((r) => (!filter.client || r.client === filter.client) && (!filter.service || r.service === filter.service) && (!filter.status || klass(r.status) === filter.status) && (filter.before_id == null || r.id < filter.before_id))
        .sort((a, b) => b.id - a.id);
      const page = rows.slice(0, filter.limit);
      return { rows: page, next_before_id: rows.length > filter.limit ? (page.at(-1)?.id ?? null) : null };
    },
    // The runtime's buckets over the seeded audit log (audit times are unix milliseconds, as the store's).
    /**
     * @param {{ span: 'hour' | 'day' }} args
     * @returns {ActivityBuckets}
     */
    activity_chart: ({ span }) => {
      const bucket_ms = span === 'day' ? 3600000 : 60000;
      const count = span === 'day' ? 24 : 60;
      const start_ms = (Math.floor(Date.now() / bucket_ms) - (count - 1)) * bucket_ms;
      const by = new Map();
      for (const r of state.activity) {
        const slot = Math.floor((r.time - start_ms) / bucket_ms);
        if (slot < 0 || slot >= count) continue;
        if (!by.has(r.service)) by.set(r.service, { service: r.service, requests: Array(count).fill(0), errors: Array(count).fill(0) });
        by.get(r.service).requests[slot] += 1;
        if (r.status >= 400) by.get(r.service).errors[slot] += 1;
      }
      return { start_ms, bucket_ms, series: [...by.values()].sort((a, b) => a.service.localeCompare(b.service)) };
    },
    /** @returns {ConnectionView[]} */
    list_connections: () => [{ id: 'c1', client: 'claude-code', service: 'demo', kind: 'sse', started_at: now() - 300, last_activity_at: now() - 2, bytes_in: 2048, bytes_out: 91234, events: 57 }],
    close_connection: () => null,
    detect_hosts: () => state.hosts,
    /**
     * @param {{ host: string, client: string, service: string }} args
     * @returns {HostPreview | Promise<never>}
     */
    preview_host_entry: ({ host, client, service }) => {
      const h = hostOf(host);
      if (h.status === 'malformed') return fail('host_config_malformed', `${h.config_path} is not valid JSON (${h.error})`);
      const entry = host === 'claude-desktop'
        ? { args: ['mcp-stdio', service, '--client', client, '--path', 'mcp'], command: '/usr/local/bin/latchkey' }
        : { headersHelper: `/usr/local/bin/latchkey headers ${client}`, type: 'http', url: `http://127.0.0.1:47821/${service}/mcp` };
      return { host: h.id, config_path: h.config_path, server_name: `latchkey-${service}`, entry_json: JSON.stringify(entry, null, 2), replaces_existing: h.servers.includes(`latchkey-${service}`) };
    },
    /**
     * @param {{ host: string, service: string }} args
     * @returns {HostApplied}
     */
    apply_host_entry: ({ host, service }) => {
      const h = hostOf(host);
      h.servers = [...h.servers, `latchkey-${service}`];
      h.can_undo = true;
      return { host: h.id, config_path: h.config_path, backup_path: `${h.config_path}.latchkey-backup-20261123T080000`, server_name: `latchkey-${service}` };
    },
    undo_host_entry: (/** @type {{ host: string }} */ { host }) => {
      const h = hostOf(host);
      h.servers = h.servers.filter((s) => !s.startsWith('latchkey-'));
      h.can_undo = false;
      return null;
    },
    // Like the Tauri command: resolves once signed in, or rejects with the engine's error and
    // leaves nothing behind.
    add_server: (/** @type {{ request: import('../src/lib/generated').AddServerRequest }} */ { request }) => {
      const { url, name } = request;
      state.lastAddRequest = request;
      const refusal = state.refuseNextAdd;
      state.refuseNextAdd = null;
      if (refusal) return new Promise((_, reject) => setTimeout(() => reject(refusal), 150));
      const host = new URL(url).hostname.split('.');
      const derived = name ?? host[host.length - 2] ?? host[0] ?? url;
      if (state.servers.some((s) => s.name === derived)) return fail('server_exists', `an MCP server named ${derived} exists; pick another name`);
      /** @type {ServerView} */
      const server = { name: derived, url, proxy_url: `http://127.0.0.1:47821/${derived}${new URL(url).pathname.replace(/\/$/, '')}`, issuer: null, state: 'logging_in', expires_at: null, scopes: [], message: null, last_login_error: null, login_requested: null };
      state.servers.push(server);
      return signIn(server);
    },
    server_login: (/** @type {{ name: string }} */ { name }) => {
      const server = state.servers.find((s) => s.name === name);
      if (!server) return fail('unknown_server', `no MCP server named ${name}`);
      signIn(server);
      return null;
    },
    cancel_server_login: () => null,
    remove_server: (/** @type {{ name: string }} */ { name }) => { state.servers = state.servers.filter((s) => s.name !== name); emit('latchkey://changed'); return null; },
    get_settings: () => state.settings,
    set_settings: (/** @type {{ settings: Settings }} */ { settings }) => { state.settings = settings; return settings; },
  };
  let nextId = 1;
  bridge.__TAURI_INTERNALS__ = {
    callbacks: {},
    metadata: { currentWindow: { label: 'main' }, currentWebview: { windowLabel: 'main', label: 'main' } },
    transformCallback(cb, once) {
      const id = nextId++;
      this.callbacks[id] = (...a) => { if (once) delete this.callbacks[id]; return cb?.(...a); };
      return id;
    },
    unregisterCallback(id) { delete this.callbacks[id]; },
    convertFileSrc: (p) => p,
    async invoke(cmd, args = {}) {
      if (cmd === 'plugin:event|listen') {
        (state.listeners[args.event] ??= []).push(args.handler);
        return args.handler;
      }
      if (cmd === 'plugin:event|unlisten') return null;
      const f = commands[cmd];
      if (!f) throw { code: 'internal', message: `unknown command ${cmd}` };
      return f(args);
    },
  };
  bridge.__TAURI_EVENT_PLUGIN_INTERNALS__ = { unregisterListener: () => {} };
  bridge.__latchkeyMock = state;
})();
