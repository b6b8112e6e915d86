//! Per-LUN counters of tgtd's SCSI traffic in the Prometheus text format
//! (version 0.0.4): READ and WRITE commands and their bytes. Counted when
//! a command has run ([`count`], from [`super::ScsiTask::run`]); read
//! with the management API's `metrics` mode (`tgtadm --mode metrics
//! --op show`) or tgtd's `--metrics` HTTP endpoint.
//!
//! The counters are kept per process, by target name and LUN, so that
//! a target deleted and made again under the same name goes on counting
//! (the rates a reader takes stay right).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use crate::scsi::status;

use super::registry::Registry;

/// One LUN's counters.
#[derive(Debug, Default)]
pub struct LunCounters {
    /// READ(6/10/12/16) commands that completed GOOD.
    pub reads: AtomicU64,
    /// WRITE and WRITE AND VERIFY commands that completed GOOD.
    pub writes: AtomicU64,
    /// Bytes those reads returned.
    pub read_bytes: AtomicU64,
    /// Bytes those writes carried.
    pub write_bytes: AtomicU64,
}

type Table = RwLock<BTreeMap<(String, u64), Arc<LunCounters>>>;

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// The counters of LUN `lun` of target `target`, made on first use.
pub fn lun(target: &str, lun: u64) -> Arc<LunCounters> {
    let key = (target.to_string(), lun);
    if let Some(c) = table().read().get(&key) {
        return c.clone();
    }
    table().write().entry(key).or_default().clone()
}

/// Whether `opcode` reads or writes blocks: `Some(true)` for a write.
fn direction(opcode: u8) -> Option<bool> {
    match opcode {
        0x08 | 0x28 | 0xa8 | 0x88 => Some(false),
        0x0a | 0x2a | 0xaa | 0x8a | 0x2e | 0xae | 0x8e => Some(true),
        _ => None,
    }
}

/// Counts a command that ran: its CDB, the bytes it carried and returned,
/// and its status. Only READs and WRITEs that completed GOOD count.
pub fn count(target: &str, lun_id: u64, cdb: &[u8], out_len: usize, in_len: usize, st: u8) {
    let Some(write) = cdb.first().copied().and_then(direction) else {
        return;
    };
    if st != status::GOOD {
        return;
    }
    let c = lun(target, lun_id);
    let (n, bytes, len) = if write {
        (&c.writes, &c.write_bytes, out_len)
    } else {
        (&c.reads, &c.read_bytes, in_len)
    };
    n.fetch_add(1, Ordering::Relaxed);
    bytes.fetch_add(len as u64, Ordering::Relaxed);
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The counters of every LUN of `registry`'s targets, as text.
pub fn render(registry: &Registry) -> String {
    let mut targets = registry.targets();
    targets.sort_by_key(|t| t.tid.0);
    let mut rows = Vec::new();
    for t in &targets {
        for l in t.scsi.luns() {
            rows.push((t.tid.0, label(&t.name), l.lun, lun(&t.name, l.lun)));
        }
    }
    let mut s = String::new();
    let metrics: [(&str, &str, [&AtomicU64Field; 2]); 2] = [
        (
            "tgtd_lun_commands_total",
            "READ and WRITE commands completed GOOD, per LUN.",
            [&|c| &c.reads, &|c| &c.writes],
        ),
        (
            "tgtd_lun_bytes_total",
            "Bytes read and written by those commands, per LUN.",
            [&|c| &c.read_bytes, &|c| &c.write_bytes],
        ),
    ];
    for (name, help, [read, write]) in metrics {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} counter");
        for (tid, target, lun, c) in &rows {
            for (op, field) in [("read", read), ("write", write)] {
                let _ = writeln!(
                    s,
                    "{name}{{tid=\"{tid}\",target=\"{target}\",lun=\"{lun}\",op=\"{op}\"}} {}",
                    field(c).load(Ordering::Relaxed)
                );
            }
        }
    }
    s
}

type AtomicU64Field = dyn Fn(&LunCounters) -> &AtomicU64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_good_reads_and_writes_count() {
        let t = "iqn.2026-12.test:metrics-unit";
        count(
            t,
            1,
            &[0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0],
            4096,
            0,
            status::GOOD,
        );
        count(
            t,
            1,
            &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            0,
            512,
            status::GOOD,
        );
        count(
            t,
            1,
            &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0],
            0,
            0,
            status::CHECK_CONDITION,
        );
        count(t, 1, &[0x12, 0, 0, 0, 36, 0], 0, 36, status::GOOD);
        let c = lun(t, 1);
        assert_eq!(c.writes.load(Ordering::Relaxed), 1);
        assert_eq!(c.write_bytes.load(Ordering::Relaxed), 4096);
        assert_eq!(c.reads.load(Ordering::Relaxed), 1);
        assert_eq!(c.read_bytes.load(Ordering::Relaxed), 512);
    }
}
