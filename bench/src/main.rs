//! `latchkey-bench`: measures Latchkey's proxy and prints the numbers BENCHMARKS.md records.
//!
//! In one process tree on loopback, with keep-alive: (a) straight to a minimal hyper upstream,
//! (b) through `latchkey serve` injecting a header, (c) through nginx adding the same header;
//! then SSE forwarding delay over many concurrent streams, RSS per idle stream, and headless
//! start-to-ready time. Run it with `scripts/bench` (release build, private keychain).

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

mod load;
mod targets;
mod upstream;

use std::time::Duration;

use anyhow::Context;

/// Settings from the command line (`--duration 10 --connections 64 --streams 1000`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seconds of load per target.
    pub duration: Duration,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Concurrent SSE streams.
    pub streams: usize,
    /// Request and response body size.
    pub body_bytes: usize,
}

fn settings() -> anyhow::Result<Settings> {
    let mut s = Settings {
        duration: Duration::from_secs(10),
        connections: 64,
        streams: 1000,
        body_bytes: 1024,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--duration" => s.duration = Duration::from_secs(value.parse()?),
            "--connections" => s.connections = value.parse()?,
            "--streams" => s.streams = value.parse()?,
            "--body-bytes" => s.body_bytes = value.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = settings()?;
    raise_fd_limit();
    let upstream = upstream::start(settings.body_bytes).await?;
    eprintln!("upstream on {}", upstream.addr);

    let latchkey = targets::Latchkey::start(upstream.addr).await?;
    let nginx = targets::Nginx::start(upstream.addr, targets::HEADER_VALUE).await?;

    let direct_url = format!("http://{}/echo", upstream.addr);
    let latchkey_url = format!("{}/bench/echo", latchkey.url);
    let nginx_url = format!("http://{}/echo", nginx.addr);

    let mut rows = Vec::new();
    for (name, url, header) in [
        ("direct (hyper upstream)", &direct_url, None),
        (
            "through Latchkey",
            &latchkey_url,
            Some(("x-latchkey-client", latchkey.client_token.as_str())),
        ),
        ("through nginx", &nginx_url, None),
    ] {
        eprintln!("load: {name}");
        load::run(url, header, &settings, Duration::from_secs(2)).await?; // warm-up
        let result = load::run(url, header, &settings, settings.duration).await?;
        rows.push((name, result));
    }
    let upstream_hits = upstream.requests_with_header();
    let sse = load::sse(&latchkey, &settings).await?;
    let idle = load::idle_stream_rss(&latchkey, &settings).await?;
    drop(nginx);
    let lk_bin = latchkey.binary.clone();
    let home = latchkey.stop().await?;
    let ready = targets::start_to_ready(&lk_bin, &home, 5).await?;

    println!("## Proxy throughput and latency");
    println!();
    println!(
        "{} connections, keep-alive, {} B request and response bodies, {} s per target, load generator in the same process tree on the same 2 cores.",
        settings.connections,
        settings.body_bytes,
        settings.duration.as_secs()
    );
    println!();
    println!("| target | requests/s | p50 | p99 | p99.9 | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, r) in &rows {
        println!(
            "| {name} | {:.0} | {} | {} | {} | {} |",
            r.rps,
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            fmt_us(r.p999_us),
            r.errors
        );
    }
    let (direct, lk, ngx) = (&rows[0].1, &rows[1].1, &rows[2].1);
    println!();
    println!(
        "Latchkey added latency vs direct: p50 {}, p99 {}; vs nginx: p50 {}, p99 {}.",
        fmt_delta(lk.p50_us, direct.p50_us),
        fmt_delta(lk.p99_us, direct.p99_us),
        fmt_delta(lk.p50_us, ngx.p50_us),
        fmt_delta(lk.p99_us, ngx.p99_us)
    );
    println!(
        "Throughput ratio: Latchkey/direct {:.2}, Latchkey/nginx {:.2}. Upstream saw the injected header on {} requests.",
        lk.rps / direct.rps.max(1.0),
        lk.rps / ngx.rps.max(1.0),
        upstream_hits
    );
    println!();
    println!("## Streaming");
    println!();
    println!(
        "{} concurrent SSE streams through Latchkey, {} events each, one every {} ms: forwarding delay p50 {}, p99 {}, max {} over {} events ({} streams completed).",
        sse.streams,
        sse.events_per_stream,
        sse.interval_ms,
        fmt_us(sse.p50_us),
        fmt_us(sse.p99_us),
        fmt_us(sse.max_us),
        sse.events,
        sse.completed
    );
    println!();
    println!(
        "Idle streams: RSS {} KiB before, {} KiB with {} idle SSE streams open: {:.1} KiB per stream.",
        idle.before_kib, idle.after_kib, idle.streams, idle.per_stream_kib
    );
    println!();
    println!("## Start-up");
    println!();
    println!(
        "`latchkey serve` start to first proxied answer: median {} ms, min {} ms, max {} ms over {} starts.",
        ready.median_ms, ready.min_ms, ready.max_ms, ready.runs
    );
    Ok(())
}

fn fmt_us(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn fmt_delta(a: u64, b: u64) -> String {
    let d = a as i64 - b as i64;
    format!("{d:+} µs")
}

/// 1,000 streams need more descriptors than the default soft limit of 1,024; the children
/// (`latchkey serve`, nginx) inherit the raised limit.
fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(65_536) {
        eprintln!("cannot raise the open-file limit: {e}");
    }
}
