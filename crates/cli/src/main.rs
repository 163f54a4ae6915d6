//! `latchkey`: log in, check status, print a token for scripts, run the headless proxy, manage
//! local clients, and hand credentials to stdio MCP servers. Each subcommand is a few lines over
//! `latchkey-runtime`; when the tray app or `latchkey serve` is running, the command asks it over
//! the loopback control API instead of touching the keychain itself.

// Printing to stdout is this binary's job; everything else logs through tracing.
#![allow(clippy::print_stdout)]

mod cli;
mod cmd;
mod exit;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_tracing(args.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("latchkey: cannot start: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    match runtime.block_on(cmd::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("latchkey: {e:#}");
            ExitCode::from(exit::code_for(&e))
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,latchkey=debug",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
