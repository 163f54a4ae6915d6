//! The running instance against real peers: the sandbox's `oidc-provider`, an in-memory
//! keychain, a private data directory.

#[cfg(unix)]
mod control_api;
mod faults;
mod hardening;
mod keychain_retry;
mod login_failures;
mod login_requests;
mod restart_note;
mod serving;
#[cfg(unix)]
mod socket;
