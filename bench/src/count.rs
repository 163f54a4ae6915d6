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
//! The requests are paced (`--rate`, 400 a second by default, about half what a build serves
//! under valgrind on a quiet machine): the audit writer commits whatever arrived in its last
//! 10 ms as one transaction, so its cost per row depends on the rate, and an unpaced count
//! charged a build more whenever the machine was busier. The report gives the rate each target's
//! slower run reached, and flags a target more than 10 % off the reference's rate: its audit
//! batches differed, so its count does not compare.
//!
//! `latchkey-bench count <target> [<target>…] [--requests 4000] [--connections 4] [--rate 400]`,
//! where a target is the path of a `latchkey` build or `floor:<variant>`. The first target is the
//! reference. nginx is left out: its workers are separate processes, and its instructions are
//! not comparable with a Rust build's anyway.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    let (mut requests, mut connections, mut rate) = (4000u64, 4usize, 400u64);
    let mut keep: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => requests = it.next().context("--requests needs a value")?.parse()?,
            "--connections" => {
                connections = it.next().context("--connections needs a value")?.parse()?;
            }
            "--rate" => rate = it.next().context("--rate needs a value")?.parse()?,
            "--keep" => keep = Some(it.next().context("--keep needs a folder")?.into()),
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
    anyhow::ensure!(rate > 0, "--rate must be above zero");
    let pace = Pace { connections, rate };
    let upstream = upstream::start(BODY_BYTES).await?;
    // The counts per function stay in `--keep`'s folder when given: `cg_diff` of a target's two
    // files, read with `cg_annotate`, then says where its instructions per request go.
    let scratch = tempfile::tempdir()?;
    let folder = match &keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir.as_path()
        }
        None => scratch.path(),
    };
    let runs = [requests, 3 * requests];
    let mut per_request = Vec::new();
    for (t, spec) in specs.iter().enumerate() {
        let mut totals = Vec::new();
        let mut reached = Vec::new();
        for &n in &runs {
            let out = folder.join(format!("target{t}-{n}.cachegrind"));
            let (total, per_second) = count_one(spec, upstream.addr, &out, n, pace).await?;
            eprintln!(
                "count: {} after {n} requests ({per_second:.0}/s): {total} instructions",
                name(t)
            );
            totals.push(total);
            reached.push(per_second);
        }
        let extra = totals[1].saturating_sub(totals[0]) as f64;
        let each = extra / (runs[1] - runs[0]) as f64;
        let start_and_stop = totals[0] as f64 - each * runs[0] as f64;
        let slowest = reached.iter().copied().fold(f64::INFINITY, f64::min);
        per_request.push((each, start_and_stop, slowest));
    }

    println!(
        "## Instructions per request: {} → {} requests, {connections} connections, {rate} a second, POST of {BODY_BYTES} B",
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
    println!(
        "| target | instructions per request | ÷ A | start and stop (millions) | slowest run, requests/s |"
    );
    println!("|---|---:|---:|---:|---:|");
    let reference = per_request[0].0.max(1.0);
    let reference_rate = per_request[0].2;
    let mut behind = false;
    for (t, (each, fixed, slowest)) in per_request.iter().enumerate() {
        let flag = if off_pace(*slowest, reference_rate) {
            behind = true;
            " ¹"
        } else {
            ""
        };
        println!(
            "| {} | {:.0} | {:.4} | {:.1} | {:.0}{flag} |",
            name(t),
            each,
            each / reference,
            fixed / 1e6,
            slowest
        );
    }
    if behind {
        println!();
        println!(
            "¹ more than 10 % off A's rate: that target's audit batches were of another size, so its count does not compare with A's; run again, or ask for a lower `--rate`."
        );
    }
    Ok(())
}

/// How the requests are sent: over how many connections, and how many a second in all.
#[derive(Clone, Copy, Debug)]
struct Pace {
    connections: usize,
    rate: u64,
}

impl Pace {
    /// The time between two requests on one connection.
    fn period(self) -> Duration {
        Duration::from_secs_f64(self.connections as f64 / self.rate as f64)
    }
}

/// Whether a target that reached `per_second` ran too far from the reference's rate for their
/// counts to compare.
fn off_pace(per_second: f64, reference: f64) -> bool {
    (per_second / reference - 1.0).abs() > 0.1
}

/// Starts `spec` under valgrind, sends `n` requests at `pace`, stops it and returns the
/// instructions it executed in all and the rate the requests reached.
async fn count_one(
    spec: &str,
    upstream: SocketAddr,
    out: &Path,
    n: u64,
    pace: Pace,
) -> anyhow::Result<(u64, f64)> {
    let wrapper = vec![
        "valgrind".to_owned(),
        "--tool=cachegrind".to_owned(),
        "--cache-sim=no".to_owned(),
        "--quiet".to_owned(),
        format!("--cachegrind-out-file={}", out.display()),
    ];
    if let Some(variant) = spec.strip_prefix("floor:") {
        let floor = floor::Floor::start_wrapped(upstream, variant.parse()?, &wrapper)?;
        let per_second = send(&format!("http://{}/echo", floor.addr), None, n, pace).await?;
        // Dropping it closes its standard input; it exits and valgrind writes the counts.
        drop(floor);
        Ok((total_instructions(out)?, per_second))
    } else {
        let lk = targets::Latchkey::start_wrapped(PathBuf::from(spec), upstream, &wrapper).await?;
        let url = format!("{}/bench/echo", lk.url);
        let token = lk.client_token.clone();
        let per_second = send(&url, Some(("x-latchkey-client", &token)), n, pace).await?;
        lk.stop_within(EXIT_WITHIN).await?;
        Ok((total_instructions(out)?, per_second))
    }
}

/// `n` POSTs, spread over keep-alive connections and paced; every answer must be a `200`.
/// Returns the requests per second reached.
async fn send(url: &str, header: Option<(&str, &str)>, n: u64, pace: Pace) -> anyhow::Result<f64> {
    let body = Bytes::from(vec![b'b'; BODY_BYTES]);
    let connections = pace.connections as u64;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(pace.connections);
    for c in 0..connections {
        let share = n / connections + u64::from(c < n % connections);
        let url = url.to_owned();
        let header = header.map(|(k, v)| (k.to_owned(), v.to_owned()));
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = load::Client::connect(&url).await?;
            // Spaced out, the connections out of phase, and a late request not caught up in a
            // burst: catching up held the asked rate on a busy machine, but its bursts made
            // batches of random size, and two processes of one build then differed by up to
            // 2.7 % instead of 0.2-0.5 %. Spaced, a busy machine lowers every target's rate
            // alike (the report shows it).
            let offset = pace.period().mul_f64(c as f64 / connections as f64);
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, pace.period());
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for _ in 0..share {
                ticks.tick().await;
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
    Ok(n as f64 / started.elapsed().as_secs_f64())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_sends_its_share_of_the_rate() {
        let pace = Pace {
            connections: 4,
            rate: 400,
        };
        assert_eq!(pace.period(), Duration::from_millis(10));
    }

    #[test]
    fn a_target_is_flagged_only_beyond_a_tenth_off_the_references_rate() {
        assert!(!off_pace(400.0, 400.0));
        assert!(!off_pace(361.0, 400.0));
        assert!(!off_pace(439.0, 400.0));
        assert!(off_pace(359.0, 400.0));
        assert!(off_pace(441.0, 400.0));
    }
}
