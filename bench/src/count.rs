//! Count mode: the user-space instructions a build executes per proxied request, counted by
//! valgrind (`cachegrind --cache-sim=no`), so that a change worth 1 % can be told from none.
//!
//! The CPU time the other modes read from `/proc` moves by several percent from one burst to
//! the next on a shared machine; an instruction count does not depend on what else runs. Each
//! target is run twice under valgrind, once for `--requests` requests and once for three times
//! as many; the difference of the two totals, divided by the difference of the requests, is the
//! cost of one request with start-up and shutdown taken out. What it leaves out: the kernel
//! (system calls, loopback delivery: about the same for every target, see BENCHMARKS.md), and
//! time lost to locks and cache misses, which an instruction count cannot see. It is a way to
//! compare builds of the same code, not a replacement for the CPU figures.
//!
//! `latchkey-bench count <target> [<target>…] [--requests 4000] [--connections 4]`, where a
//! target is the path of a `latchkey` build or `floor:<variant>`. The first target is the
//! reference. nginx is left out: its workers are separate processes, and its instructions are
//! not comparable with a Rust build's anyway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;

use crate::ab::name;
use crate::{floor, load, targets, upstream};

/// The command-line word of this mode.
pub const SUBCOMMAND: &str = "count";

/// How long a target under valgrind gets to write its counts after it was told to stop.
const EXIT_WITHIN: Duration = Duration::from_secs(120);

/// Request and response body size, as in the other modes.
const BODY_BYTES: usize = 1024;

/// Runs the count and prints a Markdown report.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let mut specs = Vec::new();
    let (mut requests, mut connections) = (4000u64, 4usize);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => requests = it.next().context("--requests needs a value")?.parse()?,
            "--connections" => {
                connections = it.next().context("--connections needs a value")?.parse()?;
            }
            spec => specs.push(spec.to_owned()),
        }
    }
    anyhow::ensure!(
        !specs.is_empty(),
        "count needs a target or more (a latchkey binary, floor:<variant>)"
    );
    anyhow::ensure!(
        requests >= connections as u64 && connections > 0,
        "--requests must be at least --connections, and both above zero"
    );
    let upstream = upstream::start(BODY_BYTES).await?;
    let scratch = tempfile::tempdir()?;
    let runs = [requests, 3 * requests];
    let mut per_request = Vec::new();
    for (t, spec) in specs.iter().enumerate() {
        let mut totals = Vec::new();
        for &n in &runs {
            let out = scratch.path().join(format!("target{t}-{n}.cachegrind"));
            let total = count_one(spec, upstream.addr, &out, n, connections).await?;
            eprintln!(
                "count: {} after {n} requests: {total} instructions",
                name(t)
            );
            totals.push(total);
        }
        let extra = totals[1].saturating_sub(totals[0]) as f64;
        let each = extra / (runs[1] - runs[0]) as f64;
        let start_and_stop = totals[0] as f64 - each * runs[0] as f64;
        per_request.push((each, start_and_stop));
    }

    println!(
        "## Instructions per request: {} → {} requests, {connections} connections, POST of {BODY_BYTES} B",
        runs[0], runs[1]
    );
    println!();
    println!(
        "valgrind `--tool=cachegrind --cache-sim=no`, user space only, audit log on; per request = (total after {} − total after {}) ÷ {}.",
        runs[1],
        runs[0],
        runs[1] - runs[0]
    );
    println!();
    for (t, spec) in specs.iter().enumerate() {
        println!("- {}: `{spec}`", name(t));
    }
    println!();
    println!("| target | instructions per request | ÷ A | start and stop (millions) |");
    println!("|---|---:|---:|---:|");
    let reference = per_request[0].0.max(1.0);
    for (t, (each, fixed)) in per_request.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.4} | {:.1} |",
            name(t),
            each,
            each / reference,
            fixed / 1e6
        );
    }
    Ok(())
}

/// Starts `spec` under valgrind, sends `n` requests over `connections`, stops it and returns
/// the instructions it executed in all.
async fn count_one(
    spec: &str,
    upstream: SocketAddr,
    out: &Path,
    n: u64,
    connections: usize,
) -> anyhow::Result<u64> {
    let wrapper = vec![
        "valgrind".to_owned(),
        "--tool=cachegrind".to_owned(),
        "--cache-sim=no".to_owned(),
        "--quiet".to_owned(),
        format!("--cachegrind-out-file={}", out.display()),
    ];
    if let Some(variant) = spec.strip_prefix("floor:") {
        let floor = floor::Floor::start_wrapped(upstream, variant.parse()?, &wrapper)?;
        send(&format!("http://{}/echo", floor.addr), None, n, connections).await?;
        // Dropping it closes its standard input; it exits and valgrind writes the counts.
        drop(floor);
    } else {
        let lk = targets::Latchkey::start_wrapped(PathBuf::from(spec), upstream, &wrapper).await?;
        let url = format!("{}/bench/echo", lk.url);
        let token = lk.client_token.clone();
        send(&url, Some(("x-latchkey-client", &token)), n, connections).await?;
        lk.stop_within(EXIT_WITHIN).await?;
    }
    total_instructions(out)
}

/// `n` POSTs, spread over `connections` keep-alive connections; every answer must be a `200`.
async fn send(
    url: &str,
    header: Option<(&str, &str)>,
    n: u64,
    connections: usize,
) -> anyhow::Result<()> {
    let body = Bytes::from(vec![b'b'; BODY_BYTES]);
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections as u64 {
        let share = n / connections as u64 + u64::from(c < n % connections as u64);
        let url = url.to_owned();
        let header = header.map(|(k, v)| (k.to_owned(), v.to_owned()));
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = load::Client::connect(&url).await?;
            for _ in 0..share {
                let header = header.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
                let status = client.post(&url, header, body.clone()).await?;
                anyhow::ensure!(status == 200, "answered {status}, not 200");
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The `summary:` line of a cachegrind output file: the instructions executed.
fn total_instructions(out: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(out).with_context(|| {
        format!(
            "valgrind wrote no counts to {} (is valgrind installed?)",
            out.display()
        )
    })?;
    match text.lines().find_map(|l| l.strip_prefix("summary:")) {
        Some(numbers) => Ok(numbers
            .split_whitespace()
            .next()
            .context("an empty summary line")?
            .parse()?),
        None => bail!("no summary line in {}", out.display()),
    }
}
