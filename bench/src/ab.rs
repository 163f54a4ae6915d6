//! A/B mode: two builds of `latchkey` served side by side in front of one upstream and loaded
//! in turn by `wrk` in short bursts, so that whatever else the machine does at the time falls
//! on both alike. Changes worth a few percent of the CPU per request drown in the ±20 % that
//! separates two full runs of the harness on a shared machine; alternating bursts within one
//! run compares them under the same conditions.
//!
//! `latchkey-bench ab <latchkey A> <latchkey B> [--rounds 8] [--seconds 3]`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::{AUDIT_THREAD, cpu, targets, upstream, wrk};

/// The command-line word of this mode.
pub const SUBCOMMAND: &str = "ab";

/// One burst's figures.
struct Sample {
    rps: f64,
    cpu_us: f64,
    audit_us: f64,
}

/// Runs the comparison and prints a Markdown report.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let mut binaries = Vec::new();
    let (mut rounds, mut seconds) = (8usize, 3u64);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => rounds = it.next().context("--rounds needs a value")?.parse()?,
            "--seconds" => seconds = it.next().context("--seconds needs a value")?.parse()?,
            path => binaries.push(PathBuf::from(path)),
        }
    }
    anyhow::ensure!(binaries.len() == 2, "ab needs two latchkey binaries");
    let body_bytes = 1024;
    let connections = 64;
    let upstream = upstream::start(body_bytes).await?;
    let mut variants = Vec::new();
    for binary in &binaries {
        variants.push(targets::Latchkey::start_binary(binary.clone(), upstream.addr).await?);
    }
    let scratch = tempfile::tempdir()?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(), Vec::new()];
    for (v, lk) in variants.iter().enumerate() {
        let header = ("x-latchkey-client", lk.client_token.as_str());
        let script = wrk::script(scratch.path(), body_bytes, Some(header))?;
        let url = format!("{}/bench/echo", lk.url);
        eprintln!("ab: warming up variant {}", name(v));
        wrk::run(&url, &script, connections, Duration::from_secs(2))?;
    }
    for round in 0..rounds {
        // A B, then B A: neither always runs first.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for v in order {
            let lk = &variants[v];
            let header = ("x-latchkey-client", lk.client_token.as_str());
            let script = wrk::script(scratch.path(), body_bytes, Some(header))?;
            let url = format!("{}/bench/echo", lk.url);
            let process = cpu::Processes::one(lk.pid);
            let before = process.cpu_us()?;
            let audit_before = cpu::threads_cpu_us(lk.pid, AUDIT_THREAD)?;
            let result = wrk::run(&url, &script, connections, Duration::from_secs(seconds))?;
            let used = process.cpu_us()?.saturating_sub(before);
            let audit = cpu::threads_cpu_us(lk.pid, AUDIT_THREAD)?.saturating_sub(audit_before);
            let requests = result.requests.max(1) as f64;
            anyhow::ensure!(result.errors == 0, "variant {} had errors", name(v));
            let sample = Sample {
                rps: result.rps,
                cpu_us: used as f64 / requests,
                audit_us: audit as f64 / requests,
            };
            eprintln!(
                "ab: round {} variant {}: {:.0} req/s, {:.1} µs/req (audit {:.1})",
                round + 1,
                name(v),
                sample.rps,
                sample.cpu_us,
                sample.audit_us
            );
            samples[v].push(sample);
        }
    }
    println!(
        "## A/B: {} rounds of {seconds} s bursts, wrk, {connections} connections",
        rounds
    );
    println!();
    for (v, binary) in binaries.iter().enumerate() {
        println!("- {}: `{}`", name(v), binary.display());
    }
    println!();
    println!(
        "| variant | CPU µs/req median (min–max) | of which audit writer | serving threads | req/s median |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut medians = Vec::new();
    for (v, s) in samples.iter().enumerate() {
        let cpu = median(s.iter().map(|x| x.cpu_us).collect());
        let audit = median(s.iter().map(|x| x.audit_us).collect());
        let serving = median(s.iter().map(|x| x.cpu_us - x.audit_us).collect());
        let rps = median(s.iter().map(|x| x.rps).collect());
        let (lo, hi) = s.iter().fold((f64::MAX, 0.0f64), |(lo, hi), x| {
            (lo.min(x.cpu_us), hi.max(x.cpu_us))
        });
        println!(
            "| {} | {cpu:.1} ({lo:.1}–{hi:.1}) | {audit:.1} | {serving:.1} | {rps:.0} |",
            name(v)
        );
        medians.push((cpu, audit, serving));
    }
    // Paired: each round's B against the same round's A.
    let paired = median(
        samples[0]
            .iter()
            .zip(&samples[1])
            .map(|(a, b)| b.cpu_us / a.cpu_us)
            .collect(),
    );
    let wins = samples[0]
        .iter()
        .zip(&samples[1])
        .filter(|(a, b)| b.cpu_us < a.cpu_us)
        .count();
    println!();
    println!(
        "B/A CPU per request: {:.3} (medians), {paired:.3} (median of the rounds' ratios); B cheaper in {wins} of {rounds} rounds. Serving threads B/A {:.3}, audit writer B/A {:.3}.",
        medians[1].0 / medians[0].0,
        medians[1].2 / medians[0].2,
        medians[1].1 / medians[0].1.max(f64::MIN_POSITIVE),
    );
    for lk in variants {
        lk.stop().await?;
    }
    Ok(())
}

fn name(v: usize) -> &'static str {
    if v == 0 { "A" } else { "B" }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
