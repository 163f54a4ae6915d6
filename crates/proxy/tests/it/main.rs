//! Integration tests of the loopback proxy: real servers on `127.0.0.1` port 0 — an upstream
//! double that records what it receives, the proxy itself, reqwest, tungstenite, MCP SDK clients
//! and a real Chromium as its callers.

mod audit;
mod body_cap;
mod browser;
mod canary;
mod closing;
mod control;
mod control_token;
mod credentials_rate;
mod expiry;
mod faults;
mod flood;
mod gates;
mod hardening;
mod injection;
mod keep_alive;
mod login;
mod managed;
mod mcp;
mod mcp_login;
mod native;
mod oauth;
mod streaming;
mod support;
mod websocket;
