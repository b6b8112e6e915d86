//! iscsi_bench: write throughput of our initiator against any target.
//!
//! `iscsi_bench iscsi://127.0.0.1:3260/IQN/1 [--seconds 10] [--depth 32]`
//! runs two phases, each with `depth` WRITE(16) commands in flight from one
//! submitting thread: sequential 128 KiB writes, then random 4 KiB writes
//! (block aligned, xorshift offsets), and prints MB/s and IOPS for each.
//! The data written is garbage: use a scratch LUN.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use iscsi::initiator::cdb;
use iscsi::initiator::lun::LunOptions;
use iscsi::initiator::session::ScsiRequest;
use iscsi::initiator::Lun;

#[derive(Parser, Debug)]
#[command(name = "iscsi_bench", about = "iSCSI write benchmark (our initiator)")]
struct Args {
    /// iscsi://[user%secret@]host[:port]/IQN/LUN
    url: String,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Commands in flight.
    #[arg(long, default_value_t = 32)]
    depth: usize,
}

fn main() -> Result<()> {
    tools::init_logging();
    let args = Args::parse();
    let lun = Lun::open_with(&args.url, LunOptions::default())
        .with_context(|| format!("opening {}", args.url))?;
    let params = lun.connection().params();
    println!(
        "target {} : {} MiB, block {} B; MaxBurstLength {}, FirstBurstLength {}, MaxXmitDSL {}, ImmediateData {}, InitialR2T {}",
        args.url,
        lun.size_bytes() >> 20,
        lun.block_size(),
        params.max_burst_length,
        params.first_burst_length,
        params.max_xmit_data_segment_length,
        params.immediate_data,
        params.initial_r2t
    );
    for (name, size, random) in [
        ("seq-write-128k", 128 << 10, false),
        ("rand-write-4k", 4096, true),
    ] {
        let (bytes, ios, elapsed) = phase(
            &lun,
            size,
            random,
            args.depth,
            Duration::from_secs(args.seconds),
        )?;
        let secs = elapsed.as_secs_f64();
        println!(
            "{name:>15}: {:8.1} MB/s {:9.0} IOPS ({ios} writes of {size} B in {secs:.1} s, depth {})",
            bytes as f64 / secs / 1e6,
            ios as f64 / secs,
            args.depth
        );
    }
    lun.close()?;
    Ok(())
}

fn phase(
    lun: &Lun,
    size: usize,
    random: bool,
    depth: usize,
    time: Duration,
) -> Result<(u64, u64, Duration)> {
    let bs = u64::from(lun.block_size());
    if !(size as u64).is_multiple_of(bs) || lun.size_bytes() < size as u64 {
        bail!("I/O size {size} does not fit the LUN");
    }
    let slots = lun.size_bytes() / size as u64;
    let data = vec![0xa5u8; size];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut seq = 0u64;
    let mut next_offset = || {
        let slot = if random {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % slots
        } else {
            seq = (seq + 1) % slots;
            seq
        };
        slot * size as u64
    };
    let conn = lun.connection();
    let lun_id = lun.url().lun;
    let start = Instant::now();
    let mut inflight = VecDeque::with_capacity(depth);
    let (mut bytes, mut ios) = (0u64, 0u64);
    loop {
        let running = start.elapsed() < time;
        if running && inflight.len() < depth {
            let off = next_offset();
            inflight.push_back(conn.start(ScsiRequest {
                lun: lun_id,
                cdb: cdb::write16(off / bs, (size as u64 / bs) as u32, false),
                data_out: data.clone(),
                in_len: 0,
            }));
            continue;
        }
        let Some(p) = inflight.pop_front() else { break };
        let r = p.wait()?;
        if r.status != cdb::status::GOOD {
            bail!("write failed: status {:#04x} sense {}", r.status, r.sense);
        }
        bytes += size as u64;
        ios += 1;
    }
    Ok((bytes, ios, start.elapsed()))
}
