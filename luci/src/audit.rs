//! The audit log: one line per login, change and action, appended to
//! `STATE_DIR/audit.log` and kept (bounded) in memory for the audit page.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;

use parking_lot::Mutex;

use crate::util::{now_ms, utc};

/// Lines kept in memory for the page.
const KEEP: usize = 200;

/// One audited thing.
#[derive(Clone, Debug)]
pub struct Entry {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Who.
    pub user: String,
    /// What was asked.
    pub what: String,
    /// What came of it.
    pub result: String,
}

impl Entry {
    /// The log file's line.
    pub fn line(&self) -> String {
        let clean = |s: &str| s.replace(['\n', '\r'], " / ");
        format!(
            "{} user={} {} => {}\n",
            utc(self.at_ms),
            self.user,
            clean(&self.what),
            clean(&self.result)
        )
    }
}

/// The log.
pub struct Audit {
    path: PathBuf,
    recent: Mutex<VecDeque<Entry>>,
}

impl Audit {
    /// A log appending to `path`.
    pub fn new(path: PathBuf) -> Audit {
        Audit {
            path,
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Records one entry; a log that cannot be written is reported by
    /// tracing (the action itself already happened).
    pub fn record(&self, user: &str, what: &str, result: &str) {
        let e = Entry {
            at_ms: now_ms(),
            user: user.to_string(),
            what: what.to_string(),
            result: result.to_string(),
        };
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(e.line().as_bytes()));
        if let Err(err) = written {
            tracing::error!("audit log {}: {err}", self.path.display());
        }
        let mut r = self.recent.lock();
        if r.len() == KEEP {
            r.pop_front();
        }
        r.push_back(e);
    }

    /// The latest entries, newest first.
    pub fn recent(&self) -> Vec<Entry> {
        self.recent.lock().iter().rev().cloned().collect()
    }
}
