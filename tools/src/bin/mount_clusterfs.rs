//! `mount.clusterfs DEVICE MOUNTPOINT [-o opts] [-f]`: mount a GFS2-format
//! volume through FUSE. Goes to the background once the mount is up unless
//! `-f`; SIGTERM/SIGINT or `fusermount3 -u` unmount it cleanly (journal
//! committed, UNMOUNT log header written).
//!
//! With `lock_nolock` the mount writes through journal0 (`-o
//! hostdata=jid=N` picks another) and recovers every dirty journal;
//! `-o spectator` mounts read-only without a journal and writes nothing
//! (refused while a journal needs recovery).
//!
//! With `lock_dlm` (the superblock's, or `-o lockproto=lock_dlm`) it joins
//! the cluster through the node's cmand (`--state-dir`) and the volume's
//! DLM lockspace, writes through the journal of its lockspace slot, and
//! shares the volume with the other nodes that mount it
//! (`clusterfs::cluster`); `-o spectator` joins without a journal, reads
//! what the others write and writes nothing (any number of spectators,
//! beyond the journals; the first mounter of a volume with a dirty journal
//! cannot be one).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use clusterfs::block::BlockDevice;
use clusterfs::block_iscsi::open_device;
use clusterfs::cluster::{ClusterMount, GatedDevice, JoinOptions};
use clusterfs::fs::FileSystem;
use clusterfs::fuse::{FuseFs, MountOptions};
use clusterfs::glock::GlockConfig;
use clusterfs::lock::LocalLocks;
use clusterfs::volume::{MountParams, Recovery, RgrpShare};
use nix::unistd::{fork, ForkResult};
use tracing::{info, warn};

/// Mount a clusterfs (GFS2-format) volume with FUSE.
#[derive(Parser, Debug)]
#[command(name = "mount.clusterfs", version)]
struct Args {
    /// Device or image file holding the volume.
    device: PathBuf,
    /// Directory to mount on.
    mountpoint: PathBuf,
    /// Mount options: lockproto=lock_nolock, commit=SECONDS, acl|noacl
    /// (POSIX ACLs enforced, default acl), allow_other, spectator
    /// (read-only, no journal), hostdata=jid=N (lock_nolock's journal,
    /// default 0), and GFS2's other options (accepted, without effect here).
    #[arg(short = 'o', default_value = "")]
    options: String,
    /// Stay in the foreground.
    #[arg(short = 'f')]
    foreground: bool,
    /// The node's cluster state directory (cmand's), for lock_dlm.
    #[arg(long, default_value = "/var/run/cluster")]
    state_dir: PathBuf,
}

/// A mounted volume, ready to serve.
enum Mounted {
    /// lock_nolock: alone on the volume.
    Alone(Box<FileSystem>),
    /// lock_dlm: one node of a cluster; the membership lives as long as
    /// the mount.
    InCluster(Box<(FuseFs, ClusterMount)>),
}

fn open_volume(args: &Args, opts: &MountOptions) -> Result<Mounted> {
    let dev_str = args.device.to_string_lossy();
    let dev: Arc<dyn BlockDevice> =
        open_device(&dev_str).with_context(|| format!("{}", args.device.display()))?;
    let mut sb = vec![0u8; clusterfs::ondisk::Superblock::SIZE];
    dev.read_at(clusterfs::ondisk::SB_BYTE_OFFSET, &mut sb)?;
    let sb = clusterfs::ondisk::Superblock::decode(&sb).context("not a GFS2 volume")?;
    let proto = opts.lockproto.clone().unwrap_or(sb.sb_lockproto.clone());
    for o in &opts.ignored {
        warn!(option = %o, "mount option accepted but has no effect in this implementation");
    }
    match proto.as_str() {
        "lock_nolock" => {
            let (fs, info) =
                FileSystem::mount_with(dev, Arc::new(LocalLocks), nolock_params(opts))?;
            log_recovery(&info);
            Ok(Mounted::Alone(Box::new(fs)))
        }
        "lock_dlm" => mount_in_cluster(args, opts, dev, &sb.sb_locktable),
        other => bail!("unknown lock protocol {other:?}"),
    }
}

/// lock_dlm: joins the cluster and mounts the volume shared with the
/// other nodes (`clusterfs::cluster`).
fn mount_in_cluster(
    args: &Args,
    opts: &MountOptions,
    dev: Arc<dyn BlockDevice>,
    sb_locktable: &str,
) -> Result<Mounted> {
    if opts.jid.is_some() {
        bail!("hostdata=jid= is for lock_nolock: with lock_dlm the journal is the node's lockspace slot");
    }
    // How many journals, and where the resource groups lie: a
    // spectator's look, which writes nothing.
    let (mut probe, info) = FileSystem::mount_with(
        dev.clone(),
        Arc::new(LocalLocks),
        MountParams::spectator(Recovery::Own),
    )?;
    let share = RgrpShare::of_rgrps(probe.volume().rgrps())
        .filter(|_| opts.rgrp_placement)
        .map(Arc::new);
    drop(probe);
    let join = JoinOptions {
        state_dir: args.state_dir.clone(),
        locktable: opts.locktable.clone().unwrap_or(sb_locktable.to_string()),
        port: opts.dlm_port,
        metrics: opts.metrics,
        share,
        glocks: GlockConfig {
            cached_kept: opts.glock_cache,
            ..GlockConfig::default()
        },
    };
    let mut cm = ClusterMount::join(&join)?;
    let dev: Arc<dyn BlockDevice> = Arc::new(GatedDevice::new(dev, cm.gate.clone()));
    let jid = cm.jid;
    let spectator = opts.spectator;
    let fuse = cm.mount_shared(info.journals, spectator, |rec| {
        let params = if spectator {
            MountParams::spectator(rec)
        } else {
            MountParams::node(jid, rec)
        };
        let (fs, info) = FileSystem::mount_with(dev.clone(), Arc::new(LocalLocks), params)
            .map_err(|e| e.to_string())?;
        log_recovery(&info);
        Ok(fs)
    })?;
    Ok(Mounted::InCluster(Box::new((fuse, cm))))
}

fn log_recovery(info: &clusterfs::volume::MountInfo) {
    if info.replayed > 0 || info.reclaimed > 0 {
        info!(
            recovered = ?info.recovered,
            replayed = info.replayed,
            reclaimed = info.reclaimed,
            "recovered journals"
        );
    }
}

/// A `lock_nolock` mount is alone on the volume: it recovers every dirty
/// journal (a spectator refuses to mount instead) and writes through
/// journal0 unless `hostdata=jid=N` says otherwise.
fn nolock_params(opts: &MountOptions) -> MountParams {
    if opts.spectator {
        MountParams::spectator(Recovery::All)
    } else {
        MountParams::node(opts.jid.unwrap_or(0), Recovery::All)
    }
}

fn run(args: &Args, ready: Option<OwnedFd>) -> Result<()> {
    let opts = MountOptions::parse(&args.options).map_err(anyhow::Error::msg)?;
    // Before the cluster's threads start: they must not take SIGTERM.
    clusterfs::fuse::block_unmount_signals()?;
    let mounted = open_volume(args, &opts)?;
    let fsname = args.device.to_string_lossy().into_owned();
    let ready = || {
        if let Some(fd) = ready {
            let mut f = std::fs::File::from(fd);
            let _ = f.write_all(b"0");
        }
    };
    let served = match mounted {
        Mounted::Alone(fs) => clusterfs::fuse::serve(*fs, &args.mountpoint, &fsname, &opts, ready),
        Mounted::InCluster(held) => {
            let (fuse, cm) = *held;
            let r = clusterfs::fuse::serve_fuse(fuse, &args.mountpoint, &fsname, &opts, ready);
            drop(cm);
            r
        }
    };
    served.with_context(|| format!("serving {}", args.mountpoint.display()))
}

/// Forks; the parent waits until the child reports the mount is up.
fn background(args: &Args) -> Result<()> {
    let (rd, wr) = nix::unistd::pipe()?;
    // SAFETY: no threads exist yet in this process.
    match unsafe { fork() }? {
        ForkResult::Parent { .. } => {
            drop(wr);
            let mut f = std::fs::File::from(rd);
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            if buf.first() == Some(&b'0') {
                return Ok(());
            }
            std::process::exit(1);
        }
        ForkResult::Child => {
            drop(rd);
            nix::unistd::setsid()?;
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?;
            nix::unistd::dup2_stdin(&null)?;
            nix::unistd::dup2_stdout(&null)?;
            let res = run(args, Some(wr));
            if let Err(e) = &res {
                eprintln!("mount.clusterfs: {e:#}");
            }
            std::process::exit(i32::from(res.is_err()));
        }
    }
}

/// glibc gives each thread that allocates an arena of its own, and a
/// thread's arena grows a page at a time, one `mprotect` call a page. The
/// mount's threads take turns at the volume: one arena, grown by `brk` in
/// steps of 128 KiB, spares those calls (a few per file created, whose
/// blocks, glocks and DLM records are new memory).
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt sets a tunable of the allocator; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn main() {
    one_malloc_arena();
    tools::init_logging();
    let args = Args::parse();
    let res = if args.foreground {
        run(&args, None)
    } else {
        background(&args)
    };
    if let Err(e) = res {
        eprintln!("mount.clusterfs: {e:#}");
        std::process::exit(1);
    }
}
