// The IPC contract. Everything a command takes, returns or rejects with, and every event payload,
// is generated from the Rust types into ./generated/ (src-tauri/src/ipc_types.rs; run
// `scripts/gen-types` after changing one): never copy one here, the Rust test fails when they
// drift. Below the re-export: names the UI gives to parts of those types, and the few values
// the Rust side takes as plain strings.
import type { HostView, RuntimeError, ServerView, ServiceStatus } from './generated';

export type * from './generated';

// ---- UI-side names (hand-written, over the generated types) ------------------------------------

/** Every command rejects with this: the runtime's error as `{code, message}`. */
export type CommandError = RuntimeError;

/** Where a remote MCP server's login stands (`ServerView::state`). */
export type ServerState = ServerView['state'];

/** An MCP host's id (`HostView::id`). */
export type HostId = HostView['id'];

/** Where a service's credential comes from (`ServiceStatus::source`). */
export type ServiceSource = ServiceStatus['source'];

/** The Activity filter's status classes (`ActivityFilter::status`, a plain string in Rust). */
export type StatusClass = 'ok' | 'client_error' | 'server_error';

/** The Activity chart's span (`activity_chart`'s `span`): the last hour by minute, or the last day by hour. */
export type ActivitySpan = 'hour' | 'day';
