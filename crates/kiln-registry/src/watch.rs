//! Bounds on slow transfers, as curl's `--speed-limit/--speed-time` set them: a body that moves
//! fewer than [`ClientOptions::low_speed_limit`] bytes per second over a
//! [`ClientOptions::low_speed_time`] window is aborted, and so is one that sends nothing for a
//! whole window (the client's socket timeouts are that window, so no single read outlives it).
//! Without this, a registry trickling a byte every 20 s keeps a build waiting forever, as each
//! read alone succeeds. While a body flows, a [`Transfer`] progress report goes out every
//! [`ClientOptions::progress_interval`].

use std::io::{self, Read};
use std::time::{Duration, Instant};

use crate::client::ClientOptions;

/// How far a long transfer has got, reported every [`ClientOptions::progress_interval`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer<'a> {
    /// What is moving: "registry r, repository p: pulling blob sha256:…".
    pub what: &'a str,
    /// Bytes received so far.
    pub bytes: u64,
    /// The whole body's size, when it is known.
    pub total: Option<u64>,
}

impl std::fmt::Display for Transfer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.total {
            Some(total) => write!(f, "{}: {} of {total} bytes so far", self.what, self.bytes),
            None => write!(f, "{}: {} bytes so far", self.what, self.bytes),
        }
    }
}

/// Where progress reports go; shared by the threads transferring blobs.
pub type Progress<'a> = &'a (dyn Fn(&Transfer<'_>) + Sync);

/// Progress of a transfer nobody watches.
pub fn silent(_: &Transfer<'_>) {}

pub(crate) type Report<'a> = Progress<'a>;

/// The reason a watched transfer was aborted, carried inside the `io::Error` a reader returns so
/// that whoever drives the reader (the blob store, or ureq sending a request body) passes it on.
#[derive(Debug)]
pub(crate) struct Stalled(pub String);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stalled {}

/// A transfer's body, read through the limits of [`ClientOptions`].
pub(crate) struct Watched<'a, R> {
    inner: R,
    opts: &'a ClientOptions,
    /// Names the transfer in progress lines: "registry r, repository p: pulling blob sha256:…".
    label: &'a str,
    total: Option<u64>,
    report: Report<'a>,
    received: u64,
    window_start: Instant,
    window_bytes: u64,
    last_report: Instant,
    /// Why the transfer failed, once it has (a stall, or the connection's own error).
    failure: Option<String>,
}

impl<'a, R: Read> Watched<'a, R> {
    pub(crate) fn new(
        inner: R,
        opts: &'a ClientOptions,
        label: &'a str,
        total: Option<u64>,
        report: Report<'a>,
    ) -> Self {
        let now = Instant::now();
        Watched {
            inner,
            opts,
            label,
            total,
            report,
            received: 0,
            window_start: now,
            window_bytes: 0,
            last_report: now,
            failure: None,
        }
    }

    /// Why reading failed, if it did: tells a broken transfer from a failure of whatever the
    /// bytes were being written to.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn so_far(&self) -> String {
        match self.total {
            Some(total) => format!("{} of {total} bytes", self.received),
            None => format!("{} bytes", self.received),
        }
    }

    fn stall(&mut self, why: String) -> io::Error {
        self.failure = Some(why.clone());
        io::Error::new(io::ErrorKind::TimedOut, Stalled(why))
    }
}

impl<R: Read> Read for Watched<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                let why = format!(
                    "stalled: no progress for {} ({} received)",
                    secs(self.opts.low_speed_time),
                    self.so_far()
                );
                return Err(self.stall(why));
            }
            Err(e) => {
                self.failure = Some(e.to_string());
                return Err(e);
            }
        };
        self.received += n as u64;
        self.window_bytes += n as u64;
        let now = Instant::now();
        if n > 0 && now.duration_since(self.last_report) >= self.opts.progress_interval {
            (self.report)(&Transfer {
                what: self.label,
                bytes: self.received,
                total: self.total,
            });
            self.last_report = now;
        }
        let elapsed = now.duration_since(self.window_start);
        if n > 0 && elapsed >= self.opts.low_speed_time {
            let rate = self.window_bytes as f64 / elapsed.as_secs_f64();
            if rate < self.opts.low_speed_limit as f64 {
                let why = format!(
                    "transfer too slow: {} bytes in the last {}, below the minimum of {} bytes/s \
                     over {} ({} received)",
                    self.window_bytes,
                    secs(elapsed),
                    self.opts.low_speed_limit,
                    secs(self.opts.low_speed_time),
                    self.so_far()
                );
                return Err(self.stall(why));
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Ok(n)
    }
}

/// A socket read or write that hit its timeout (Linux reports `WouldBlock` for those).
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// `0.5 s`, `30 s`, `1.25 s`.
pub(crate) fn secs(d: Duration) -> String {
    let rounded = (d.as_secs_f64() * 100.0).round() / 100.0;
    format!("{rounded} s")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Yields `chunks` one per read, sleeping `pause` before each.
    struct Slow {
        chunks: Vec<Vec<u8>>,
        pause: Duration,
    }

    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.chunks.is_empty() {
                return Ok(0);
            }
            std::thread::sleep(self.pause);
            let mut chunk = self.chunks.remove(0);
            if chunk.len() > buf.len() {
                self.chunks.insert(0, chunk.split_off(buf.len()));
            }
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    fn opts(limit: u64, window_ms: u64) -> ClientOptions {
        ClientOptions {
            low_speed_limit: limit,
            low_speed_time: Duration::from_millis(window_ms),
            progress_interval: Duration::ZERO,
            ..ClientOptions::default()
        }
    }

    #[test]
    fn a_body_slower_than_the_limit_over_a_window_fails_and_reports_progress() {
        let lines = Mutex::new(Vec::new());
        let report = |t: &Transfer<'_>| lines.lock().unwrap().push(t.to_string());
        let slow = Slow {
            chunks: vec![vec![1; 10]; 20],
            pause: Duration::from_millis(10),
        };
        let opts = opts(1_000_000, 30);
        let mut watched = Watched::new(slow, &opts, "pulling blob x", Some(200), &report);
        let err = io::copy(&mut watched, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let why = watched.failure().unwrap().to_owned();
        assert!(
            why.starts_with("transfer too slow: ") && why.contains("1000000 bytes/s over 0.03 s"),
            "{why}"
        );
        assert!(why.contains(" of 200 bytes received)"), "{why}");
        let lines = lines.into_inner().unwrap();
        assert_eq!(lines[0], "pulling blob x: 10 of 200 bytes so far");
    }

    #[test]
    fn a_body_at_or_above_the_limit_completes() {
        let slow = Slow {
            chunks: vec![vec![1; 100]; 5],
            pause: Duration::from_millis(10),
        };
        // 100 bytes per (at least) 10 ms, against a limit of 1 byte/s.
        let opts = opts(1, 15);
        let mut watched = Watched::new(slow, &opts, "x", None, &silent);
        let mut out = Vec::new();
        watched.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 500);
        assert!(watched.failure().is_none());
    }

    #[test]
    fn a_read_timeout_is_a_stall() {
        struct TimesOut;
        impl Read for TimesOut {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        let opts = opts(1, 30_000);
        let mut watched = Watched::new(TimesOut, &opts, "x", Some(5), &silent);
        let err = watched.read(&mut [0; 4]).unwrap_err();
        assert!(err.get_ref().unwrap().is::<Stalled>());
        assert_eq!(
            watched.failure(),
            Some("stalled: no progress for 30 s (0 of 5 bytes received)")
        );
    }
}
