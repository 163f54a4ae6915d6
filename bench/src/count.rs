//! Count mode: the user-space instructions a build executes per proxied request, counted by
//! valgrind (`callgrind`, one count per thread), so that a change worth 1 % can be told from none.
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
//! Even paced, the writer's batches are not the same size from one process to the next (how
//! many rows one 10 ms linger gathers depends on the scheduler), and on a busy machine that moved
//! the whole count by up to 3.4 % between two processes of one build (2026-12-07, third session),
//! sqlite's functions making up the difference. So each thread is counted apart
//! (`--separate-threads`), and the report gives the audit writer's thread on its own beside
//! everything else: a change to the request path shows in the second figure without the
//! writer's noise.
//!
//! `latchkey-bench count <target> [<target>…] [--requests 4000] [--connections 4] [--rate 400]
//! [--keep DIR]`,
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
    // The counts per thread and function stay in `--keep`'s folder when given (callgrind's
    // format, one file per thread, `callgrind_annotate` reads them).
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
            let out = folder.join(format!("target{t}-{n}.callgrind"));
            let (counts, per_second) = count_one(spec, upstream.addr, &out, n, pace).await?;
            eprintln!(
                "count: {} after {n} requests ({per_second:.0}/s): {} instructions, {} of them the audit writer's",
                name(t),
                counts.all,
                counts.writer
            );
            totals.push(counts);
            reached.push(per_second);
        }
        let requests = (runs[1] - runs[0]) as f64;
        let slope = |of: fn(&Counts) -> u64| {
            of(&totals[1]).saturating_sub(of(&totals[0])) as f64 / requests
        };
        let each = slope(|c| c.all);
        let writer = slope(|c| c.writer);
        let start_and_stop = totals[0].all as f64 - each * runs[0] as f64;
        let slowest = reached.iter().copied().fold(f64::INFINITY, f64::min);
        per_request.push(PerRequest {
            each,
            writer,
            start_and_stop,
            slowest,
        });
    }

    println!(
        "## Instructions per request: {} → {} requests, {connections} connections, {rate} a second, POST of {BODY_BYTES} B",
        runs[0], runs[1]
    );
    println!();
    println!(
        "valgrind `--tool=callgrind --separate-threads=yes`, user space only, audit log on; per request = (total after {} − total after {}) ÷ {}. \"Without the writer\" leaves out the audit writer's thread, whose batches vary from one process to the next.",
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
        "| target | instructions per request | ÷ A | without the writer | ÷ A | the audit writer | start and stop (millions) | slowest run, requests/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let reference = &per_request[0];
    let mut behind = false;
    for (t, p) in per_request.iter().enumerate() {
        let flag = if off_pace(p.slowest, reference.slowest) {
            behind = true;
            " ¹"
        } else {
            ""
        };
        println!(
            "| {} | {:.0} | {:.4} | {:.0} | {:.4} | {:.0} | {:.1} | {:.0}{flag} |",
            name(t),
            p.each,
            p.each / reference.each.max(1.0),
            p.serving(),
            p.serving() / reference.serving().max(1.0),
            p.writer,
            p.start_and_stop / 1e6,
            p.slowest
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

/// One target's figures, per request.
struct PerRequest {
    each: f64,
    /// The audit writer thread's share of `each`.
    writer: f64,
    start_and_stop: f64,
    slowest: f64,
}

impl PerRequest {
    /// Everything but the audit writer's thread.
    fn serving(&self) -> f64 {
        self.each - self.writer
    }
}

/// The instructions one process executed: in all, and on the audit writer's thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    all: u64,
    writer: u64,
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
) -> anyhow::Result<(Counts, f64)> {
    let wrapper = vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        "--separate-threads=yes".to_owned(),
        // Per function only, names written out in full, so the writer's thread can be found by
        // name and the files stay small.
        "--dump-instr=no".to_owned(),
        "--dump-line=no".to_owned(),
        "--compress-strings=no".to_owned(),
        "--compress-pos=no".to_owned(),
        "--quiet".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    if let Some(variant) = spec.strip_prefix("floor:") {
        let floor = floor::Floor::start_wrapped(upstream, variant.parse()?, &wrapper)?;
        let per_second = send(&format!("http://{}/echo", floor.addr), None, n, pace).await?;
        // Dropping it closes its standard input; it exits and valgrind writes the counts.
        drop(floor);
        Ok((counts(out)?, per_second))
    } else {
        let lk = targets::Latchkey::start_wrapped(PathBuf::from(spec), upstream, &wrapper).await?;
        let url = format!("{}/bench/echo", lk.url);
        let token = lk.client_token.clone();
        let per_second = send(&url, Some(("x-latchkey-client", &token)), n, pace).await?;
        lk.stop_within(EXIT_WITHIN).await?;
        let counts = counts(out)?;
        // Latchkey always runs the writer; a count without it means the mark no longer names
        // the writer's code, and "without the writer" would silently be everything.
        anyhow::ensure!(
            counts.writer > 0,
            "no thread of {spec} ran {WRITER_MARK}…: has the audit writer moved? (see {})",
            out.display()
        );
        Ok((counts, per_second))
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

/// A function only the audit writer's thread runs.
const WRITER_MARK: &str = "fn=latchkey_store::audit::writer::";

/// Sums the per-thread files callgrind wrote beside `out` (`out-01`, `out-02`, …).
fn counts(out: &Path) -> anyhow::Result<Counts> {
    let folder = out.parent().context("an output path without a folder")?;
    let prefix = format!(
        "{}-",
        out.file_name()
            .context("an output path without a name")?
            .to_string_lossy()
    );
    let mut total = Counts::default();
    let mut threads = 0;
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        let is_thread = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(&prefix))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_thread {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let one = thread_counts(&text).with_context(|| format!("in {}", path.display()))?;
        total.all += one.all;
        total.writer += one.writer;
        threads += 1;
    }
    if threads == 0 {
        bail!(
            "valgrind wrote no counts beside {} (is valgrind installed?)",
            out.display()
        );
    }
    Ok(total)
}

/// One thread's file: its `summary:` line, all of it the writer's if it ran the writer's code.
fn thread_counts(text: &str) -> anyhow::Result<Counts> {
    let all = text
        .lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .context("no summary line")?
        .split_whitespace()
        .next()
        .context("an empty summary line")?
        .parse()?;
    let writer = if text.contains(WRITER_MARK) { all } else { 0 };
    Ok(Counts { all, writer })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writers_thread_is_told_by_its_code_and_every_threads_file_is_summed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("target0-4000.callgrind");
        let thread = |file: &str, summary: u64, body: &str| {
            let text = format!(
                "# callgrind format\nevents: Ir\nsummary: {summary}\n\n{body}\ntotals: {summary}\n"
            );
            std::fs::write(dir.path().join(file), text).expect("write");
        };
        thread("target0-4000.callgrind-01", 1000, "fn=main\n0 1000");
        thread(
            "target0-4000.callgrind-02",
            300,
            "fn=latchkey_store::audit::writer::insert\n0 300",
        );
        thread("target0-4000.callgrind-03", 20, "fn=other\n0 20");
        // Neither another run's threads nor the empty base file count.
        thread("target0-12000.callgrind-01", 9, "fn=main");
        std::fs::write(&out, "").expect("write");
        assert_eq!(
            counts(&out).expect("counts"),
            Counts {
                all: 1320,
                writer: 300
            }
        );
        let missing = dir.path().join("target1-4000.callgrind");
        assert!(counts(&missing).is_err(), "no thread files is an error");
    }

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
