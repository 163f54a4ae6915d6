//! A/B mode: builds and proxies served side by side in front of one upstream and loaded in
//! turn by `wrk` in short bursts, so that whatever else the machine does at the time falls on
//! all of them alike. Changes worth a few percent of the CPU per request drown in the ±20 % that
//! separates two full runs of the harness on a shared machine; alternating bursts within one
//! run compares them under the same conditions.
//!
//! `latchkey-bench ab <target> <target> [<target>…] [--rounds 8] [--seconds 3]`, where a target
//! is the path of a `latchkey` build, `nginx`, or `floor:<variant>` (see [`crate::floor::Variant`]).
//! The first target is the reference every other is compared with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::{AUDIT_THREAD, cpu, floor, targets, upstream, wrk};

/// The command-line word of this mode.
pub const SUBCOMMAND: &str = "ab";

/// One burst's figures.
struct Sample {
    rps: f64,
    cpu_us: f64,
    audit_us: f64,
}

/// One thing under test, running.
enum Target {
    Latchkey(targets::Latchkey),
    Nginx(targets::Nginx),
    Floor(floor::Floor),
}

impl Target {
    async fn start(spec: &str, upstream: SocketAddr) -> anyhow::Result<Self> {
        Ok(if spec == "nginx" {
            Self::Nginx(targets::Nginx::start(upstream, targets::HEADER_VALUE).await?)
        } else if let Some(variant) = spec.strip_prefix("floor:") {
            Self::Floor(floor::Floor::start(upstream, variant.parse()?)?)
        } else {
            Self::Latchkey(targets::Latchkey::start_binary(PathBuf::from(spec), upstream).await?)
        })
    }

    /// Where `wrk` sends its requests, and the header a request needs to be let through.
    fn url_and_header(&self) -> (String, Option<(&'static str, &str)>) {
        match self {
            Self::Latchkey(lk) => (
                format!("{}/bench/echo", lk.url),
                Some(("x-latchkey-client", lk.client_token.as_str())),
            ),
            Self::Nginx(ngx) => (format!("http://{}/echo", ngx.addr), None),
            Self::Floor(floor) => (format!("http://{}/echo", floor.addr), None),
        }
    }

    fn processes(&self) -> anyhow::Result<cpu::Processes> {
        match self {
            Self::Latchkey(lk) => Ok(cpu::Processes::one(lk.pid)),
            Self::Nginx(ngx) => cpu::Processes::with_children(ngx.pid),
            Self::Floor(floor) => Ok(cpu::Processes::one(floor.pid)),
        }
    }

    /// CPU time of Latchkey's audit writer so far; none for the others.
    fn audit_us(&self) -> anyhow::Result<u64> {
        match self {
            Self::Latchkey(lk) => cpu::threads_cpu_us(lk.pid, AUDIT_THREAD),
            Self::Nginx(_) | Self::Floor(_) => Ok(0),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        if let Self::Latchkey(lk) = self {
            lk.stop().await?;
        }
        Ok(())
    }
}

/// Runs the comparison and prints a Markdown report.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let mut specs = Vec::new();
    let (mut rounds, mut seconds) = (8usize, 3u64);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => rounds = it.next().context("--rounds needs a value")?.parse()?,
            "--seconds" => seconds = it.next().context("--seconds needs a value")?.parse()?,
            spec => specs.push(spec.to_owned()),
        }
    }
    anyhow::ensure!(
        specs.len() >= 2,
        "ab needs two targets or more (a latchkey binary, nginx, floor:<variant>)"
    );
    let body_bytes = 1024;
    let connections = 64;
    let upstream = upstream::start(body_bytes).await?;
    let mut running = Vec::new();
    for spec in &specs {
        running.push(Target::start(spec, upstream.addr).await?);
    }
    let scratch = tempfile::tempdir()?;
    let mut samples: Vec<Vec<Sample>> = specs.iter().map(|_| Vec::new()).collect();
    for (v, target) in running.iter().enumerate() {
        let (url, header) = target.url_and_header();
        let script = wrk::script(scratch.path(), body_bytes, header)?;
        eprintln!("ab: warming up {}", name(v));
        wrk::run(&url, &script, connections, Duration::from_secs(2))?;
    }
    let n = running.len();
    for round in 0..rounds {
        // Each round starts one target later: none always runs first or last.
        for k in 0..n {
            let v = (round + k) % n;
            let target = &running[v];
            let (url, header) = target.url_and_header();
            let script = wrk::script(scratch.path(), body_bytes, header)?;
            let process = target.processes()?;
            let before = process.cpu_us()?;
            let audit_before = target.audit_us()?;
            let result = wrk::run(&url, &script, connections, Duration::from_secs(seconds))?;
            let used = process.cpu_us()?.saturating_sub(before);
            let audit = target.audit_us()?.saturating_sub(audit_before);
            let requests = result.requests.max(1) as f64;
            anyhow::ensure!(result.errors == 0, "{} had errors", specs[v]);
            let sample = Sample {
                rps: result.rps,
                cpu_us: used as f64 / requests,
                audit_us: audit as f64 / requests,
            };
            eprintln!(
                "ab: round {} {}: {:.0} req/s, {:.1} µs/req (audit {:.1})",
                round + 1,
                name(v),
                sample.rps,
                sample.cpu_us,
                sample.audit_us
            );
            samples[v].push(sample);
        }
    }
    println!("## A/B: {rounds} rounds of {seconds} s bursts, wrk, {connections} connections");
    println!();
    for (v, spec) in specs.iter().enumerate() {
        println!("- {}: `{spec}`", name(v));
    }
    println!();
    println!(
        "| target | CPU µs/req median (min–max) | of which audit writer | serving | req/s median | ÷ A (medians / rounds) | cheaper than A in |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let reference = median(samples[0].iter().map(|x| x.cpu_us).collect());
    for (v, s) in samples.iter().enumerate() {
        let cpu = median(s.iter().map(|x| x.cpu_us).collect());
        let audit = median(s.iter().map(|x| x.audit_us).collect());
        let serving = median(s.iter().map(|x| x.cpu_us - x.audit_us).collect());
        let rps = median(s.iter().map(|x| x.rps).collect());
        let (lo, hi) = s.iter().fold((f64::MAX, 0.0f64), |(lo, hi), x| {
            (lo.min(x.cpu_us), hi.max(x.cpu_us))
        });
        // Paired: each round's figure against the same round's reference.
        let paired = median(
            samples[0]
                .iter()
                .zip(s)
                .map(|(a, b)| b.cpu_us / a.cpu_us)
                .collect(),
        );
        let wins = samples[0]
            .iter()
            .zip(s)
            .filter(|(a, b)| b.cpu_us < a.cpu_us)
            .count();
        println!(
            "| {} | {cpu:.1} ({lo:.1}–{hi:.1}) | {audit:.1} | {serving:.1} | {rps:.0} | {:.3} / {paired:.3} | {wins} of {rounds} |",
            name(v),
            cpu / reference,
        );
    }
    for target in running {
        target.stop().await?;
    }
    Ok(())
}

/// A, B, C, … by position.
pub fn name(v: usize) -> String {
    char::from_u32(u32::from(b'A') + u32::try_from(v).unwrap_or(25).min(25))
        .unwrap_or('?')
        .to_string()
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
