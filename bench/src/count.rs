//! Count mode: the user-space instructions a build executes per proxied request, counted by
//! valgrind (`callgrind`, one count per thread), so that a change worth 1 % can be told from none.
//!
//! The CPU time the other modes read from `/proc` moves by several percent from one burst to
//! the next on a shared machine; an instruction count does not depend on what else runs. Each
//! target runs once under valgrind: `--warm-up` requests, then the counters are zeroed
//! (`callgrind_control --zero`), then `--requests` requests, then the counts are dumped
//! (`callgrind_control --dump`). What the window holds is what those requests cost: start-up,
//! warm-up (first connections, the statement cache, the allocator's first pages) and shutdown
//! stay outside. (Until 2026-12-08 each target ran twice, for N and 3N requests, and the
//! difference was divided by 2N; a start-up that differed between the two processes, by
//! 15 million instructions at times, moved a build's figure by up to 0.8 %.) What it leaves out:
//! the kernel (system calls, loopback delivery: about the same for every target, see
//! BENCHMARKS.md), and time lost to locks and cache misses, which an instruction count cannot
//! see. It is a way to compare builds of the same code, not a replacement for the CPU figures.
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
//! `latchkey-bench count <target> [<target>…] [--requests 8000] [--warm-up 1000] [--connections 4]
//! [--rate 400] [--keep DIR]`,
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
    let (mut requests, mut warm_up, mut connections, mut rate) = (8000u64, 1000u64, 4usize, 400u64);
    let mut keep: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => requests = it.next().context("--requests needs a value")?.parse()?,
            "--warm-up" => warm_up = it.next().context("--warm-up needs a value")?.parse()?,
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
        requests >= connections as u64 && warm_up >= connections as u64 && connections > 0,
        "--requests and --warm-up must be at least --connections, and all above zero"
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
    let window = Window {
        warm_up,
        requests,
        pace,
    };
    let mut per_request = Vec::new();
    for (t, spec) in specs.iter().enumerate() {
        let out = folder.join(format!("target{t}.callgrind"));
        let (counts, per_second) = count_one(spec, upstream.addr, &out, window).await?;
        eprintln!(
            "count: {} over {requests} requests ({per_second:.0}/s): {} instructions, {} of them the audit writer's, {} the serving threads' parking",
            name(t),
            counts.all,
            counts.writer,
            counts.parking
        );
        per_request.push(PerRequest {
            each: counts.all as f64 / requests as f64,
            writer: counts.writer as f64 / requests as f64,
            parking: counts.parking as f64 / requests as f64,
            per_second,
        });
    }

    println!(
        "## Instructions per request: {requests} requests after {warm_up} of warm-up, {connections} connections, {rate} a second, POST of {BODY_BYTES} B"
    );
    println!();
    println!(
        "valgrind `--tool=callgrind --separate-threads=yes`, user space only, audit log on; the counters are zeroed after the warm-up and dumped after the last answer (`callgrind_control`), so start-up and shutdown are outside the window. \"Without the writer\" leaves out the audit writer's thread, whose batches vary from one process to the next; \"working\" also leaves out the serving threads' parking in the runtime (waiting, and the timer wheel's and I/O driver's work on waking), which follows the machine's timing more than the build."
    );
    println!();
    for (t, spec) in specs.iter().enumerate() {
        println!("- {}: `{spec}`", name(t));
    }
    println!();
    println!(
        "| target | instructions per request | ÷ A | without the writer | ÷ A | working | ÷ A | the audit writer | parking | requests/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let reference = &per_request[0];
    let mut behind = false;
    for (t, p) in per_request.iter().enumerate() {
        let flag = if off_pace(p.per_second, reference.per_second) {
            behind = true;
            " ¹"
        } else {
            ""
        };
        println!(
            "| {} | {:.0} | {:.4} | {:.0} | {:.4} | {:.0} | {:.4} | {:.0} | {:.0} | {:.0}{flag} |",
            name(t),
            p.each,
            p.each / reference.each.max(1.0),
            p.serving(),
            p.serving() / reference.serving().max(1.0),
            p.working(),
            p.working() / reference.working().max(1.0),
            p.writer,
            p.parking,
            p.per_second
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
    /// The serving threads' parking, a share of `each` too.
    parking: f64,
    /// The rate the counted requests reached.
    per_second: f64,
}

impl PerRequest {
    /// Everything but the audit writer's thread.
    fn serving(&self) -> f64 {
        self.each - self.writer
    }

    /// The serving threads without their parking: what a request's own work costs.
    fn working(&self) -> f64 {
        self.serving() - self.parking
    }
}

/// The instructions one process executed: in all, on the audit writer's thread, and in the
/// serving threads' runtime parking (waiting for I/O and timers, and the timer wheel's and the
/// I/O driver's work on waking).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    all: u64,
    writer: u64,
    parking: u64,
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

/// What one target is asked: `warm_up` requests before the counters are zeroed, `requests`
/// counted ones, both at `pace`.
#[derive(Clone, Copy, Debug)]
struct Window {
    warm_up: u64,
    requests: u64,
    pace: Pace,
}

/// How long the target is left alone before the counters are zeroed and before they are
/// dumped: the audit writer's last batch (a 10 ms linger, then the commit) and the answers'
/// bookkeeping fall on the side of the window they belong to.
const SETTLE: Duration = Duration::from_millis(300);

/// Starts `spec` under valgrind, sends the warm-up, zeroes the counters, sends the counted
/// requests, dumps the counters, stops it, and returns the instructions of the window (in all,
/// and the audit writer's) and the rate the counted requests reached.
async fn count_one(
    spec: &str,
    upstream: SocketAddr,
    out: &Path,
    window: Window,
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
    let counted = |url: String, header: Option<(String, String)>, pid: u32| async move {
        let header = header.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
        send(&url, header, window.warm_up, window.pace).await?;
        tokio::time::sleep(SETTLE).await;
        callgrind_control("--zero", pid).await?;
        let per_second = send(&url, header, window.requests, window.pace).await?;
        tokio::time::sleep(SETTLE).await;
        callgrind_control("--dump", pid).await?;
        anyhow::Ok(per_second)
    };
    let (per_second, spec_is_latchkey) = if let Some(variant) = spec.strip_prefix("floor:") {
        let floor = floor::Floor::start_wrapped(upstream, variant.parse()?, &wrapper)?;
        let url = format!("http://{}/echo", floor.addr);
        let per_second = counted(url, None, floor.pid).await?;
        // Dropping it closes its standard input; it exits and valgrind writes its last counts.
        drop(floor);
        (per_second, false)
    } else {
        let lk = targets::Latchkey::start_wrapped(PathBuf::from(spec), upstream, &wrapper).await?;
        let url = format!("{}/bench/echo", lk.url);
        let header = ("x-latchkey-client".to_owned(), lk.client_token.clone());
        let per_second = counted(url, Some(header), lk.pid).await?;
        lk.stop_within(EXIT_WITHIN).await?;
        (per_second, true)
    };
    let counts = counts(out, DUMP_PART)?;
    // Latchkey always runs the writer; a count without it means the mark no longer names the
    // writer's code, and "without the writer" would silently be everything.
    anyhow::ensure!(
        !spec_is_latchkey || counts.writer > 0,
        "no thread of {spec} ran {WRITER_MARK}… in the window: has the audit writer moved? (see {})",
        out.display()
    );
    Ok((counts, per_second))
}

/// The part number callgrind gives the files of the first dump asked for.
const DUMP_PART: u32 = 1;

/// Asks callgrind in process `pid` to `--zero` or `--dump` its counters, and waits for its
/// answer. `callgrind_control` reaches a process blocked in a system call too (through
/// valgrind's gdbserver), and exits with 0 even when it found no such process, so its answer is
/// read.
async fn callgrind_control(action: &str, pid: u32) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("callgrind_control")
        .arg(action)
        .arg(pid.to_string())
        .output()
        .await
        .context("cannot run callgrind_control (is valgrind installed?)")?;
    let answer = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success() && answered_ok(&answer),
        "callgrind_control {action} {pid} failed: {}{}",
        answer.trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Whether `callgrind_control`'s output says the process did what it was asked.
fn answered_ok(stdout: &str) -> bool {
    stdout.lines().any(|l| l.trim() == "OK.")
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

/// Sums the per-thread files callgrind wrote beside `out` for dump `part` (`out.1-01`,
/// `out.1-02`, …).
fn counts(out: &Path, part: u32) -> anyhow::Result<Counts> {
    let folder = out.parent().context("an output path without a folder")?;
    let prefix = format!(
        "{}.{part}-",
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
        total.parking += one.parking;
        threads += 1;
    }
    if threads == 0 {
        bail!(
            "valgrind wrote no counts of dump {part} beside {} (is valgrind installed?)",
            out.display()
        );
    }
    Ok(total)
}

/// The function a Tokio current-thread runtime parks its thread in.
const PARK_FN: &str = "tokio::runtime::scheduler::current_thread::Context::park";

/// One thread's file: its `summary:` line, all of it the writer's if it ran the writer's code,
/// and what the calls into [`PARK_FN`] cost, with everything they called (the call lines'
/// inclusive costs, from callers other than the parking itself).
///
/// How often a serving thread parks depends on timing (whether the upstream's answer is in
/// before the thread runs out of work), not on the build: in one run two processes of one
/// build parked for 1,487 and 1,984 instructions a request, while the rest of their serving
/// threads' counts differed by 0.3 %.
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
    let (mut caller, mut callee) = ("", "");
    let mut parking = 0u64;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("fn=") {
            caller = name;
        } else if let Some(name) = line.strip_prefix("cfn=") {
            callee = name;
        } else if line.starts_with("calls=") {
            // The line after `calls=` is the call's position and inclusive cost.
            let cost = lines.next().and_then(|l| l.split_whitespace().nth(1));
            if callee == PARK_FN && !caller.starts_with(PARK_FN) {
                parking += cost.context("a call without its cost")?.parse::<u64>()?;
            }
        }
    }
    // The writer's thread is left out whole already.
    let parking = if writer > 0 { 0 } else { parking };
    Ok(Counts {
        all,
        writer,
        parking,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writers_thread_is_told_by_its_code_and_every_threads_file_of_the_dump_is_summed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("target0.callgrind");
        let thread = |file: &str, summary: u64, body: &str| {
            let text = format!(
                "# callgrind format\nevents: Ir\nsummary: {summary}\n\n{body}\ntotals: {summary}\n"
            );
            std::fs::write(dir.path().join(file), text).expect("write");
        };
        // A serving thread: the run loop calls the parking twice (its cost counted), the
        // parking calls the I/O driver (inside it, not counted again) and itself (a recursion,
        // not counted again).
        let park = PARK_FN;
        thread(
            "target0.callgrind.1-01",
            1000,
            &format!(
                "fn=main\n0 100\ncfn={park}\ncalls=3 0\n0 200\ncfn=other\ncalls=1 0\n0 50\ncfn={park}\ncalls=1 0\n0 40\nfn={park}\n0 10\ncfn=io::turn\ncalls=2 0\n0 150\ncfn={park}\ncalls=1 0\n0 30"
            ),
        );
        // The writer's thread: whatever it calls is the writer's.
        thread(
            "target0.callgrind.1-02",
            300,
            &format!(
                "fn=latchkey_store::audit::writer::insert\n0 280\ncfn={park}\ncalls=1 0\n0 20"
            ),
        );
        thread("target0.callgrind.1-03", 20, "fn=other\n0 20");
        // Neither the files written at exit, nor another dump's, nor another target's count.
        thread("target0.callgrind-01", 9, "fn=main");
        thread("target0.callgrind.2-01", 7, "fn=main");
        thread("target1.callgrind.1-01", 5, "fn=main");
        assert_eq!(
            counts(&out, 1).expect("counts"),
            Counts {
                all: 1320,
                writer: 300,
                parking: 240,
            }
        );
        assert!(counts(&out, 3).is_err(), "no thread files is an error");
    }

    #[test]
    fn only_an_ok_from_the_process_counts_as_done() {
        assert!(answered_ok(
            "PID 25503: /usr/bin/sleep 20\nsending command zero to pid 25503\n  OK.\n"
        ));
        assert!(!answered_ok(
            "Error: Callgrind task with PID/name '25438' not detected.\n"
        ));
        assert!(!answered_ok(""));
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
