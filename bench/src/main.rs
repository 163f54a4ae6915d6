//! `latchkey-bench`: measures Latchkey's proxy and prints the numbers BENCHMARKS.md records.
//!
//! In one process tree on loopback, with keep-alive: (a) straight to a minimal hyper upstream,
//! (b) through `latchkey serve` injecting a header (audit log on), (c) through nginx adding the
//! same header (access log on); each driven by the built-in load generator and by `wrk`, at
//! many connections (throughput, CPU time per request from `/proc`) and at one (median
//! latency); then SSE forwarding delay over many concurrent streams, RSS per idle stream, and
//! headless start-to-ready time. Run it with `scripts/bench` (release build, private keychain).
//!
//! Beside them, (d) the floor ([`floor`]): a minimal proxy from the same crates (hyper, hyper-util,
//! Tokio, thread per core) adding the same header, no gates and no audit, so the report shows how
//! much of the cost is the stack and how much is Latchkey's own.
//!
//! `latchkey-bench ab <latchkey A> <latchkey B>` compares two builds instead ([`ab`]), and
//! `latchkey-bench count <latchkey A> <latchkey B>` counts their instructions per request under
//! valgrind ([`count`]).

// The report on stdout is this program's output.
#![allow(clippy::print_stdout)]

mod ab;
mod count;
mod cpu;
mod floor;
mod load;
mod targets;
mod upstream;
mod wrk;

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

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(floor::SUBCOMMAND) {
        let upstream = args
            .next()
            .context("floor-proxy needs the upstream's address")?
            .parse()
            .context("floor-proxy's upstream address")?;
        let variant = match args.next() {
            Some(word) => word.parse()?,
            None => floor::Variant::Conn,
        };
        return floor::serve(upstream, variant);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(ab::SUBCOMMAND) {
        raise_fd_limit();
        return runtime.block_on(ab::run(&args[1..]));
    }
    if args.first().map(String::as_str) == Some(count::SUBCOMMAND) {
        return runtime.block_on(count::run(&args[1..]));
    }
    runtime.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let settings = settings()?;
    raise_fd_limit();
    let upstream = upstream::start(settings.body_bytes).await?;
    eprintln!("upstream on {}", upstream.addr);

    let latchkey = targets::Latchkey::start(upstream.addr).await?;
    let nginx = targets::Nginx::start(upstream.addr, targets::HEADER_VALUE).await?;
    let floor = floor::Floor::start(upstream.addr, floor::Variant::Conn)?;

    let direct_url = format!("http://{}/echo", upstream.addr);
    let latchkey_url = format!("{}/bench/echo", latchkey.url);
    let nginx_url = format!("http://{}/echo", nginx.addr);
    let floor_url = format!("http://{}/echo", floor.addr);
    let lk_token = latchkey.client_token.clone();
    let lk_header = ("x-latchkey-client", lk_token.as_str());
    let targets = [
        Target {
            name: "direct (hyper upstream)",
            url: &direct_url,
            header: None,
            cpu: None,
            audit_of: None,
        },
        Target {
            name: "through Latchkey",
            url: &latchkey_url,
            header: Some(lk_header),
            cpu: Some(cpu::Processes::one(latchkey.pid)),
            audit_of: Some(latchkey.pid),
        },
        Target {
            name: "through nginx",
            url: &nginx_url,
            header: None,
            cpu: Some(cpu::Processes::with_children(nginx.pid)?),
            audit_of: None,
        },
        // Last, so the first three run in the order of the earlier reports.
        Target {
            name: "through the floor (hyper alone)",
            url: &floor_url,
            header: None,
            cpu: Some(cpu::Processes::one(floor.pid)),
            audit_of: None,
        },
    ];
    let upstream_cpu = cpu::Processes::one(std::process::id());
    let scratch = tempfile::tempdir()?;

    let mut rows = Vec::new();
    let mut side = Vec::new();
    for t in &targets {
        eprintln!(
            "load: {} (built-in, {} connections)",
            t.name, settings.connections
        );
        let c = settings.connections;
        load::run(t.url, t.header, &settings, c, Duration::from_secs(2)).await?; // warm-up
        let before = cpu_of(t.cpu.as_ref())?;
        let many = load::run(t.url, t.header, &settings, c, settings.duration).await?;
        let builtin_cpu = per_request(before, cpu_of(t.cpu.as_ref())?, many.requests);
        eprintln!("load: {} (built-in, 1 connection)", t.name);
        let one = load::run(t.url, t.header, &settings, 1, settings.duration).await?;

        eprintln!("load: {} (wrk, {c} connections)", t.name);
        let script = wrk::script(scratch.path(), settings.body_bytes, t.header)?;
        wrk::run(t.url, &script, c, Duration::from_secs(2))?; // warm-up
        let before = cpu_of(t.cpu.as_ref())?;
        let up_before = upstream_cpu.cpu_us()?;
        let audit_before = t
            .audit_of
            .map(|pid| cpu::threads_cpu_us(pid, AUDIT_THREAD))
            .transpose()?;
        let wrk_many = wrk::run(t.url, &script, c, settings.duration)?;
        let wrk_cpu = per_request(before, cpu_of(t.cpu.as_ref())?, wrk_many.requests);
        let wrk_audit_cpu = match t.audit_of {
            Some(pid) => per_request(
                audit_before,
                Some(cpu::threads_cpu_us(pid, AUDIT_THREAD)?),
                wrk_many.requests,
            ),
            None => None,
        };
        let wrk_upstream_cpu = per_request(
            Some(up_before),
            Some(upstream_cpu.cpu_us()?),
            wrk_many.requests,
        );
        eprintln!("load: {} (wrk, 1 connection)", t.name);
        let wrk_one = wrk::run(t.url, &script, 1, settings.duration)?;
        side.push(Side {
            builtin_cpu,
            builtin_one_p50: one.p50_us,
            wrk_many,
            wrk_cpu,
            wrk_audit_cpu,
            wrk_upstream_cpu,
            wrk_one_p50: wrk_one.p50_us,
        });
        rows.push((t.name, many));
    }
    let upstream_hits = upstream.requests_with_header();
    eprintln!(
        "sse: {} streams, direct / through Latchkey / through nginx",
        settings.streams
    );
    let upstream_base = format!("http://{}", upstream.addr);
    let lk_base = format!("{}/bench", latchkey.url);
    let nginx_base = format!("http://{}", nginx.addr);
    let floor_base = format!("http://{}", floor.addr);
    // Per path: its base, its header, and the processes whose CPU it charges (targets 0–3).
    let paths = [
        (upstream_base.as_str(), None, &targets[0]),
        (lk_base.as_str(), Some(lk_header), &targets[1]),
        (nginx_base.as_str(), None, &targets[2]),
        (floor_base.as_str(), None, &targets[3]),
    ];
    let mut sse_runs = Vec::new();
    for phases in [load::Phases::Together, load::Phases::Spread] {
        let mut runs = Vec::new();
        for (base, header, target) in paths {
            let before = cpu_of(target.cpu.as_ref())?;
            let result = load::sse(base, header, &settings, phases).await?;
            let after = cpu_of(target.cpu.as_ref())?;
            let per_event = before
                .zip(after)
                .map(|(b, a)| a.saturating_sub(b) as f64 / result.events.max(1) as f64);
            runs.push((target.name, result, per_event));
        }
        sse_runs.push((phases, runs));
    }
    let idle = load::idle_stream_rss(&latchkey, &settings).await?;
    drop(nginx);
    drop(floor);
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
    side_by_side(&targets, &rows, &side, &settings);
    println!();
    println!("## Streaming");
    println!();
    for (phases, runs) in &sse_runs {
        let direct = &runs[0].1;
        println!(
            "{} concurrent SSE streams, {} events each, one every {} ms, {}; delay from the upstream's emission to the client's arrival (both in the harness, one clock). Direct is the harness's own share; the proxy adds the rest. CPU per event: the proxy's processes over the phase (`/proc`), divided by the events delivered.",
            direct.streams,
            direct.events_per_stream,
            direct.interval_ms,
            match phases {
                load::Phases::Together =>
                    "every stream's events in step (bursts of up to all streams at once)",
                load::Phases::Spread => "the streams' events spread evenly over the interval",
            }
        );
        println!();
        println!(
            "| path | p50 | p99 | max | added p50 | added p99 | CPU per event | events | streams completed |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, r, per_event) in runs {
            println!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
                fmt_us(r.p50_us),
                fmt_us(r.p99_us),
                fmt_us(r.max_us),
                fmt_delta(r.p50_us, direct.p50_us),
                fmt_delta(r.p99_us, direct.p99_us),
                per_event.map_or("–".to_owned(), |us| format!("{us:.1} µs")),
                r.events,
                r.completed
            );
        }
        println!();
        println!("p99 by position in the stream (first event / the events between / last event):");
        for (name, r, _) in runs {
            let [first, middle, last] = r.p99_by_position_us;
            println!(
                "{name} {} / {} / {};",
                fmt_us(first),
                fmt_us(middle),
                fmt_us(last)
            );
        }
        println!();
    }
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

/// One target of the comparison.
struct Target<'a> {
    name: &'static str,
    url: &'a str,
    header: Option<(&'static str, &'a str)>,
    /// The processes whose CPU time is the target's (none for direct).
    cpu: Option<cpu::Processes>,
    /// The process whose audit writer thread is measured apart (Latchkey).
    audit_of: Option<u32>,
}

/// The name of Latchkey's audit writer thread (`latchkey_store::AuditLog`).
pub(crate) const AUDIT_THREAD: &str = "latchkey-audit";

/// What the side-by-side table shows of one target beyond the built-in 64-connection run.
struct Side {
    builtin_cpu: Option<f64>,
    builtin_one_p50: u64,
    wrk_many: wrk::WrkResult,
    wrk_cpu: Option<f64>,
    /// Of `wrk_cpu`, Latchkey's audit writer thread.
    wrk_audit_cpu: Option<f64>,
    wrk_upstream_cpu: Option<f64>,
    wrk_one_p50: u64,
}

fn cpu_of(p: Option<&cpu::Processes>) -> anyhow::Result<Option<u64>> {
    p.map(cpu::Processes::cpu_us).transpose()
}

/// CPU microseconds per completed request.
fn per_request(before: Option<u64>, after: Option<u64>, requests: u64) -> Option<f64> {
    Some(after?.saturating_sub(before?) as f64 / requests.max(1) as f64)
}

fn side_by_side(
    targets: &[Target<'_>],
    rows: &[(&str, load::LoadResult)],
    side: &[Side],
    settings: &Settings,
) {
    println!();
    println!("## Side by side (issue 12)");
    println!();
    println!(
        "Same upstream (the harness's hyper upstream) behind every target. Latchkey with its audit log on, nginx with its access log on (2 workers), the floor a minimal hyper proxy (thread per core, no gates, no audit). CPU time per request = (utime + stime) delta of the proxy's processes in `/proc/<pid>/stat` over the {c}-connection run / requests completed. p50 @ 1 conn from a separate one-connection run of {d} s.",
        c = settings.connections,
        d = settings.duration.as_secs()
    );
    println!();
    println!(
        "| target | generator | req/s @ {c} | CPU µs/req @ {c} | p50 @ 1 conn | added p50 @ 1 conn | p99 @ {c} | errors |",
        c = settings.connections
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let direct = &side[0];
    for ((t, (_, many)), s) in targets.iter().zip(rows).zip(side) {
        println!(
            "| {} | built-in | {:.0} | {} | {} | {} | {} | {} |",
            t.name,
            many.rps,
            fmt_cpu(s.builtin_cpu),
            fmt_us(s.builtin_one_p50),
            fmt_delta(s.builtin_one_p50, direct.builtin_one_p50),
            fmt_us(many.p99_us),
            many.errors
        );
        println!(
            "| {} | wrk | {:.0} | {} | {} | {} | {} | {} |",
            t.name,
            s.wrk_many.rps,
            fmt_cpu(s.wrk_cpu),
            fmt_us(s.wrk_one_p50),
            fmt_delta(s.wrk_one_p50, direct.wrk_one_p50),
            fmt_us(s.wrk_many.p99_us),
            s.wrk_many.errors
        );
    }
    let (lk, ngx, floor) = (&side[1], &side[2], &side[3]);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".to_owned(),
    };
    println!();
    println!(
        "Latchkey/nginx: CPU per request {} (wrk), {} (built-in); throughput at {} connections {:.2} (wrk), {:.2} (built-in).",
        ratio(lk.wrk_cpu, ngx.wrk_cpu),
        ratio(lk.builtin_cpu, ngx.builtin_cpu),
        settings.connections,
        lk.wrk_many.rps / ngx.wrk_many.rps.max(1.0),
        rows[1].1.rps / rows[2].1.rps.max(1.0),
    );
    println!(
        "The floor (hyper alone, same threads) / nginx: CPU per request {} (wrk), {} (built-in); throughput {:.2} (wrk). Latchkey / floor: CPU per request {} (wrk), {} (built-in).",
        ratio(floor.wrk_cpu, ngx.wrk_cpu),
        ratio(floor.builtin_cpu, ngx.builtin_cpu),
        floor.wrk_many.rps / ngx.wrk_many.rps.max(1.0),
        ratio(lk.wrk_cpu, floor.wrk_cpu),
        ratio(lk.builtin_cpu, floor.builtin_cpu),
    );
    println!(
        "The upstream (in the harness's process, idle otherwise under wrk) used {} per request behind Latchkey and {} behind nginx.",
        fmt_cpu(lk.wrk_upstream_cpu),
        fmt_cpu(ngx.wrk_upstream_cpu)
    );
    println!(
        "Of Latchkey's CPU per request under wrk, its audit writer thread (SQLite) used {}.",
        fmt_cpu(lk.wrk_audit_cpu)
    );
}

fn fmt_cpu(us: Option<f64>) -> String {
    us.map_or_else(|| "–".to_owned(), |us| format!("{us:.1} µs"))
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
