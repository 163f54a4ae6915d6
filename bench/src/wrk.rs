//! `wrk`, the external load generator, so the harness's own client cannot flatter any target:
//! the same POST of `body_bytes` over keep-alive connections, one thread per core, latency
//! percentiles from `--latency`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

/// What one `wrk` run reported.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    /// Requests completed.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
    /// Non-2xx answers plus socket errors.
    pub errors: u64,
}

/// Writes the Lua script that makes every request a POST of `body_bytes`, with `header`.
pub fn script(
    dir: &Path,
    body_bytes: usize,
    header: Option<(&str, &str)>,
) -> anyhow::Result<String> {
    let mut lua = format!(
        "wrk.method = \"POST\"\nwrk.body = string.rep(\"b\", {body_bytes})\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
    );
    if let Some((name, value)) = header {
        lua.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    let name = match header {
        Some(_) => "post-with-header.lua",
        None => "post.lua",
    };
    let path = dir.join(name);
    std::fs::write(&path, lua)?;
    Ok(path.display().to_string())
}

/// Runs `wrk` against `url` with `connections` for `duration`.
pub fn run(
    url: &str,
    script: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<WrkResult> {
    let threads = connections.clamp(1, 2);
    let out = Command::new("wrk")
        .args([
            "--latency",
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{}s", duration.as_secs()),
            "-s",
            script,
            url,
        ])
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn parse(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_us = duration_us(v)?,
            ["99%", v] => r.p99_us = duration_us(v)?,
            [n, "requests", "in", ..] => r.requests = n.parse().ok()?,
            ["Requests/sec:", v] => r.rps = v.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    (r.requests > 0).then_some(r)
}

/// `812.00us`, `1.62ms`, `2.01s` → microseconds.
fn duration_us(v: &str) -> Option<u64> {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        return None;
    };
    Some((number.parse::<f64>().ok()? * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_are_read() {
        let text = "Running 5s test @ http://127.0.0.1:1/echo
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  300.00us   9.00ms   90.00%
  Latency Distribution
     50%  812.00us
     75%    1.10ms
     90%    1.50ms
     99%    3.62ms
  400000 requests in 5.00s, 440.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  80000.12
Transfer/sec:     88.00MB
";
        let r = parse(text).expect("parsed");
        assert_eq!(r.requests, 400_000);
        assert_eq!(r.p50_us, 812);
        assert_eq!(r.p99_us, 3620);
        assert_eq!(r.errors, 7);
        assert!((r.rps - 80000.12).abs() < 0.01);
    }
}
