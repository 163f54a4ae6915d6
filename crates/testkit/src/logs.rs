//! Captured logs: one process-wide `tracing` subscriber at TRACE for every target, writing into
//! memory, so a test can prove a full flow leaks no secret.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// The in-memory log sink shared by every [`LogCapture`] of the process.
#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut all) = self.0.lock() {
            all.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A handle on the process-wide captured log text.
#[derive(Clone)]
pub struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl LogCapture {
    /// Install the capturing subscriber (once per process; later calls share the buffer).
    ///
    /// If another global subscriber was installed first, nothing is captured; tests that use
    /// this must call it before anything else installs one.
    pub fn start() -> LogCapture {
        let buffer = BUFFER
            .get_or_init(|| {
                let buffer = Arc::new(Mutex::new(Vec::new()));
                let _installed = tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::TRACE)
                    .with_ansi(false)
                    .with_target(true)
                    .with_writer(Sink(buffer.clone()))
                    .try_init();
                buffer
            })
            .clone();
        LogCapture { buffer }
    }

    /// Everything captured so far, by every test of the process.
    pub fn text(&self) -> String {
        self.buffer
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether the captured text contains `s`.
    pub fn contains(&self, s: &str) -> bool {
        self.text().contains(s)
    }

    /// Panic if any of `secrets` appears in the captured text. The message names the secret
    /// (the `name` of a [`crate::canary`], else its position), never its value.
    ///
    /// # Panics
    /// When a secret was logged.
    pub fn assert_absent(&self, secrets: &[impl AsRef<str>]) {
        let text = self.text();
        for (i, secret) in secrets.iter().enumerate() {
            let secret = secret.as_ref();
            if secret.is_empty() {
                continue;
            }
            let lines = text.lines().filter(|l| l.contains(secret)).count();
            if lines > 0 {
                let label = canary_name(secret)
                    .map_or_else(|| format!("secret #{i}"), |name| format!("canary {name:?}"));
                panic!(
                    "{label} appears in {lines} of {} captured log lines",
                    text.lines().count()
                );
            }
        }
    }
}

/// The `name` of a `canary-{name}-{hex}` value.
fn canary_name(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix("canary-")?;
    let (name, _hex) = rest.rsplit_once('-')?;
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_secret_is_found_and_named_without_its_value() {
        let logs = LogCapture::start();
        let secret = crate::canary("unit-secret");
        let absent = crate::canary("never-logged");
        tracing::info!(value = %secret, "planted");
        assert!(logs.contains(&secret), "the event was captured");
        logs.assert_absent(&[absent.as_str()]);
        let message = std::panic::catch_unwind(|| logs.assert_absent(&[secret.as_str()]))
            .expect_err("a logged secret must fail the assertion");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(message.contains("\"unit-secret\""), "names it: {message}");
        assert!(!message.contains(&secret), "never prints the value");
    }
}
