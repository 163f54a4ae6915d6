//! The load generator: keep-alive HTTP/1.1 connections sending fixed-size requests, latency
//! percentiles, SSE forwarding delay, and memory held by idle streams.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::Settings;
use crate::targets::Latchkey;

/// One keep-alive connection.
pub struct Client {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Client {
    /// Connects to the authority of `url`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let authority = authority(url)?;
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    async fn send(
        &mut self,
        method: &str,
        url: &str,
        header: Option<(&str, &str)>,
        body: Bytes,
    ) -> anyhow::Result<u16> {
        let authority = authority(url)?;
        let mut request = Request::builder()
            .method(method)
            .uri(path_of(url))
            .header("host", authority);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        self.sender.ready().await?;
        let response = self
            .sender
            .send_request(request.body(Full::new(body))?)
            .await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }

    /// A POST of `body`; the status code.
    pub async fn post(
        &mut self,
        url: &str,
        header: Option<(&str, &str)>,
        body: Bytes,
    ) -> anyhow::Result<u16> {
        self.send("POST", url, header, body).await
    }

    /// A GET; the status code.
    pub async fn get(&mut self, url: &str, header: Option<(&str, &str)>) -> anyhow::Result<u16> {
        self.send("GET", url, header, Bytes::new()).await
    }
}

fn authority(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("http:// URL expected"))?;
    Ok(rest.split('/').next().unwrap_or(rest).to_owned())
}

fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.find('/')
        .map_or_else(|| "/".to_owned(), |i| rest[i..].to_owned())
}

/// Throughput and latency of one run.
pub struct LoadResult {
    /// Requests completed with a `200`.
    pub requests: u64,
    /// Completed requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Non-200 answers and transport errors.
    pub errors: u64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// `connections` connections POST `settings.body_bytes` to `url` for `duration`.
pub async fn run(
    url: &str,
    header: Option<(&str, &str)>,
    settings: &Settings,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let body = Bytes::from(vec![b'b'; settings.body_bytes]);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let url = url.to_owned();
        let header = header.map(|(n, v)| (n.to_owned(), v.to_owned()));
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(64 * 1024);
            let mut errors = 0u64;
            let mut client = Client::connect(&url).await?;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client
                    .send(
                        "POST",
                        &url,
                        header.as_ref().map(|(n, v)| (n.as_str(), v.as_str())),
                        body.clone(),
                    )
                    .await
                {
                    Ok(200) => {
                        latencies.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX))
                    }
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        client = Client::connect(&url).await?;
                    }
                }
            }
            Ok::<_, anyhow::Error>((latencies, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await??;
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(LoadResult {
        requests: all.len() as u64,
        rps: all.len() as f64 / elapsed,
        p50_us: percentile(&all, 50.0),
        p99_us: percentile(&all, 99.0),
        p999_us: percentile(&all, 99.9),
        errors,
    })
}

/// SSE forwarding delay results.
pub struct SseResult {
    /// Streams opened.
    pub streams: usize,
    /// Streams that received every event.
    pub completed: usize,
    /// Events per stream.
    pub events_per_stream: u64,
    /// Interval between events.
    pub interval_ms: u64,
    /// Events measured.
    pub events: usize,
    /// Median delay from emission to arrival.
    pub p50_us: u64,
    /// 99th percentile delay.
    pub p99_us: u64,
    /// Worst delay.
    pub max_us: u64,
    /// 99th percentile of the first event of each stream, of the events between, and of the
    /// last: a tail at either end points at the work a stream's start or end causes (its setup,
    /// its audit row), one in the middle at forwarding itself.
    pub p99_by_position_us: [u64; 3],
}

/// How the streams' events fall in time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Phases {
    /// Every stream's events come one interval after its answer: the streams, all requested at
    /// once, emit in bursts of up to all of them within a few milliseconds, so the p99 is the
    /// wait behind a burst (per-event cost × streams ÷ cores) more than any one event's path.
    Together,
    /// Stream `k` of `n` is delayed by `k / n` of an interval: the same event rate spread evenly,
    /// as independent sessions' events fall.
    Spread,
}

/// Opens `settings.streams` SSE streams to `base` (`…/sse` is appended), with `header` on each
/// request; each event carries its emission time (same process, same clock), so arrival minus
/// emission is the delivery delay. Run direct, it is the harness's own share (its upstream and
/// client tasks waiting for a core); through a proxy, that plus the forwarding delay.
pub async fn sse(
    base: &str,
    header: Option<(&str, &str)>,
    settings: &Settings,
    phases: Phases,
) -> anyhow::Result<SseResult> {
    let (count, interval_ms) = (20u64, 50u64);
    let header = header.map(|(name, value)| (name.to_owned(), value.to_owned()));
    let mut tasks = Vec::new();
    let streams = settings.streams.max(1) as u64;
    for k in 0..streams {
        let offset_us = match phases {
            Phases::Together => 0,
            Phases::Spread => k * interval_ms * 1000 / streams,
        };
        let url =
            format!("{base}/sse?count={count}&interval_ms={interval_ms}&offset_us={offset_us}");
        let header = header.clone();
        tasks.push(tokio::spawn(async move {
            let mut delays = Vec::new();
            let authority = authority(&url)?;
            let stream = tokio::net::TcpStream::connect(&authority).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut request = Request::get(path_of(&url))
                .header("host", authority)
                .header("accept", "text/event-stream");
            if let Some((name, value)) = &header {
                request = request.header(name.as_str(), value.as_str());
            }
            let request = request.body(Empty::new())?;
            let mut body = sender.send_request(request).await?.into_body();
            let mut buffer = String::new();
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame?.into_data() else {
                    continue;
                };
                let now = crate::upstream::epoch().elapsed().as_nanos();
                buffer.push_str(&String::from_utf8_lossy(&data));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    if let Some(t) = event.split("\"t\":").nth(1).and_then(|s| {
                        s.trim_end_matches(|c: char| !c.is_ascii_digit())
                            .parse::<u128>()
                            .ok()
                    }) {
                        delays
                            .push(u64::try_from(now.saturating_sub(t) / 1000).unwrap_or(u64::MAX));
                    }
                }
            }
            Ok::<_, anyhow::Error>(delays)
        }));
    }
    let mut all = Vec::new();
    let mut by_position: [Vec<u64>; 3] = Default::default();
    let mut completed = 0;
    for task in tasks {
        if let Ok(Ok(delays)) = task.await {
            if delays.len() as u64 == count {
                completed += 1;
            }
            let last = delays.len().saturating_sub(1);
            for (i, &delay) in delays.iter().enumerate() {
                let position = match i {
                    0 => 0,
                    i if i == last => 2,
                    _ => 1,
                };
                by_position[position].push(delay);
            }
            all.extend(delays);
        }
    }
    all.sort_unstable();
    let p99_by_position_us = by_position.map(|mut d| {
        d.sort_unstable();
        percentile(&d, 99.0)
    });
    Ok(SseResult {
        streams: settings.streams,
        completed,
        events_per_stream: count,
        interval_ms,
        events: all.len(),
        p50_us: percentile(&all, 50.0),
        p99_us: percentile(&all, 99.0),
        max_us: all.last().copied().unwrap_or(0),
        p99_by_position_us,
    })
}

/// RSS before and after opening idle streams.
pub struct IdleResult {
    /// Streams held open.
    pub streams: usize,
    /// RSS before, KiB.
    pub before_kib: u64,
    /// RSS with the streams open, KiB.
    pub after_kib: u64,
    /// Difference per stream, KiB.
    pub per_stream_kib: f64,
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

/// Opens `settings.streams` idle SSE streams through Latchkey and measures its RSS.
pub async fn idle_stream_rss(lk: &Latchkey, settings: &Settings) -> anyhow::Result<IdleResult> {
    let url = format!("{}/bench/idle", lk.url);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(lk.pid)?;
    let mut held = Vec::new();
    for _ in 0..settings.streams {
        let authority = authority(&url)?;
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::get(path_of(&url))
            .header("host", authority)
            .header("x-latchkey-client", &lk.client_token)
            .body(Empty::new())?;
        let mut body = sender.send_request(request).await?.into_body();
        // Wait for the opening comment so the stream is established end to end.
        let _ = body.frame().await;
        held.push((sender, body, driver));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(lk.pid)?;
    drop(held);
    Ok(IdleResult {
        streams: settings.streams,
        before_kib: before,
        after_kib: after,
        per_stream_kib: (after.saturating_sub(before)) as f64 / settings.streams.max(1) as f64,
    })
}
