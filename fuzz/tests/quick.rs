//! The stable fuzz runner (`scripts/fuzz --stable`, run by `scripts/test`): no libFuzzer, no
//! nightly, no sanitizer. For each target it replays `seeds/<target>` and `corpus/<target>`
//! (libFuzzer's corpus, when a by-hand run left one), then feeds it mutated inputs (bit flips,
//! byte and block edits, splices, tokens that matter to these parsers) for a fixed time. A panic
//! is a finding: its input is written to `artifacts/<target>/`, the run goes on with the next
//! target and the process exits 1. An input that runs longer than 10 s stops the run the same way.
//! Prints runs and CPU seconds per target.
//!
//!   cargo test --test quick -- [SECONDS=10] [TARGET...]     (FUZZ_SEED=<n> repeats a run)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Byte strings that steer these targets: the field separators of the harnesses, path and
/// header tricks, JSON and TOML punctuation, SSE field names.
const TOKENS: &[&[u8]] = &[
    b"\xff",
    b"\0",
    b"\n",
    b"\r\n",
    b":",
    b"/",
    b"\\",
    b"..",
    b"%2e",
    b"%2E%2e",
    b"%252e",
    b"%2f",
    b"%5c",
    b";",
    b"?",
    b"#",
    b"&",
    b"=",
    b"%",
    b"lk_",
    b"Bearer ",
    b"http://",
    b"https://",
    b"127.0.0.1",
    b"localhost",
    b"[::1]",
    b":47821",
    b"Host",
    b"Origin",
    b"X-Latchkey-Client",
    b"X_Api_Key",
    b"x-forwarded-for",
    b"Proxy-",
    b"Sec-Fetch-Site",
    b"cross-site",
    b"OPTIONS",
    b"Access-Control-Request-Method",
    b"api_key",
    b"Location",
    b"Link",
    b"scope=\"",
    b"\"",
    b"\\\"",
    b",",
    b"{",
    b"}",
    b"[",
    b"]",
    b"//",
    b"/*",
    b"*/",
    b"[[services]]",
    b"name = ",
    b"upstream = ",
    b"data:",
    b"event:",
    b"id:",
    b"retry:",
    b"\xf0\x9f\x94\x91",
    b"\x7f",
];

/// SplitMix64: small, fast and seedable, enough to choose mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }
    }
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        let at = rng.below(len + 1);
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => input.insert(at, rng.next() as u8),
            3 if len > 0 => {
                let end = (at + 1 + rng.below(16)).min(len);
                input.drain(at.min(len - 1)..end);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(32)).min(len);
                let block = input[start..end].to_vec();
                input.splice(at..at, block);
            }
            5 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let start = rng.below(other.len());
                let end = (start + rng.below(64)).min(other.len());
                input.splice(at..at, other[start..end].iter().copied());
            }
            6 if len > 0 => input.truncate(at),
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
        }
    }
    input.truncate(4096);
}

fn read_dir(dir: &Path, into: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for file in files {
        if let Ok(bytes) = std::fs::read(&file) {
            into.push(bytes);
        }
    }
}

/// CPU seconds this thread has used (Linux's scheduler statistics; 0 elsewhere).
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

fn save(target: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join(target);
    let _ = std::fs::create_dir_all(&dir);
    let name: u64 = input.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let file = dir.join(format!("quick-{name:016x}"));
    let _ = std::fs::write(&file, input);
    file
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (seconds, wanted) = match args.first().and_then(|a| a.parse::<u64>().ok()) {
        Some(s) => (s, &args[1..]),
        None => (10, &args[..]),
    };
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("quick fuzz: {seconds} s a target, FUZZ_SEED={seed}");

    // A watchdog: the worker bumps `runs` per input and parks the input in `current`.
    let runs = Arc::new(AtomicU64::new(0));
    let current: Arc<Mutex<(String, Vec<u8>)>> = Arc::default();
    {
        let (runs, current) = (runs.clone(), current.clone());
        std::thread::spawn(move || {
            let mut last = u64::MAX;
            loop {
                std::thread::sleep(Duration::from_secs(10));
                let now = runs.load(Ordering::Relaxed);
                if now == last {
                    let (target, input) = current.lock().map(|c| c.clone()).unwrap_or_default();
                    let file = save(&target, &input);
                    eprintln!("{target}: one input ran for over 10 s: {}", file.display());
                    std::process::exit(1);
                }
                last = now;
            }
        });
    }
    // Panics are findings, reported once each below, not printed by the default hook.
    let message: Arc<Mutex<String>> = Arc::default();
    {
        let message = message.clone();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut m) = message.lock() {
                *m = info.to_string();
            }
        }));
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut rng = Rng(seed);
    let mut failed = Vec::new();
    println!(
        "{:<14} {:>10} {:>8} {:>8}  result",
        "target", "runs", "inputs", "cpu_s"
    );
    for (name, run) in latchkey_fuzz::TARGETS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let mut corpus = Vec::new();
        read_dir(&root.join("seeds").join(name), &mut corpus);
        read_dir(&root.join("corpus").join(name), &mut corpus);
        let inputs = corpus.len();
        let started = Instant::now();
        let cpu = thread_cpu();
        let mut count = 0u64;
        let mut finding = None;
        let mut replay = corpus.clone().into_iter();
        while started.elapsed() < Duration::from_secs(seconds) || replay.len() > 0 {
            let input = replay.next().unwrap_or_else(|| {
                let mut input = if corpus.is_empty() {
                    Vec::new()
                } else {
                    corpus[rng.below(corpus.len())].clone()
                };
                mutate(&mut rng, &corpus, &mut input);
                input
            });
            if let Ok(mut c) = current.lock() {
                c.0 = name.to_owned();
                c.1.clone_from(&input);
            }
            let outcome = std::panic::catch_unwind(|| run(&input));
            count += 1;
            runs.fetch_add(1, Ordering::Relaxed);
            if outcome.is_err() {
                finding = Some((
                    save(name, &input),
                    message.lock().map(|m| m.clone()).unwrap_or_default(),
                ));
                break;
            }
        }
        let cpu = thread_cpu() - cpu;
        let result = if finding.is_some() { "CRASH" } else { "ok" };
        println!("{name:<14} {count:>10} {inputs:>8} {cpu:>8.1}  {result}");
        if let Some((file, message)) = finding {
            eprintln!(
                "  {message}\n  input: {} (replay: cargo test --test quick -- 0 {name} after copying it into seeds/{name}/)",
                file.display()
            );
            failed.push(name);
        }
        let _ = std::io::stdout().flush();
    }
    if !failed.is_empty() {
        eprintln!("quick fuzz: findings in {}", failed.join(", "));
        std::process::exit(1);
    }
}
