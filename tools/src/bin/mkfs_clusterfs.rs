//! `mkfs.clusterfs`: make a GFS2-format filesystem, with `mkfs.gfs2`'s flags.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use clusterfs::block_iscsi::open_device;
use clusterfs::mkfs::{
    mkfs, uuid_string, LockProto, MkfsOptions, MkfsReport, Phase, DEFAULT_RG_MB,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Make a GFS2 filesystem (as mkfs.gfs2 does).
#[derive(Parser, Debug)]
#[command(name = "mkfs.clusterfs", version, disable_version_flag = true)]
struct Args {
    /// Filesystem block size in bytes (512..4096, a power of two).
    #[arg(short = 'b', default_value_t = 4096)]
    bsize: u32,
    /// Size of the quota change files in MB (only 1 is supported).
    #[arg(short = 'c', default_value_t = 1)]
    qcsize: u32,
    /// Debug output (accepted; use RUST_LOG for logs).
    #[arg(short = 'D')]
    debug: bool,
    /// Journal size in MB (8..1024); default depends on the device size.
    #[arg(short = 'J')]
    journal_mb: Option<u32>,
    /// Number of journals.
    #[arg(short = 'j', default_value_t = 1)]
    journals: u32,
    /// Don't discard unused blocks (accepted; we never discard).
    #[arg(short = 'K')]
    no_discard: bool,
    /// Don't ask for confirmation.
    #[arg(short = 'O')]
    override_confirm: bool,
    /// Locking protocol: lock_dlm or lock_nolock.
    #[arg(short = 'p', default_value = "lock_dlm")]
    lockproto: String,
    /// Quiet: print nothing.
    #[arg(short = 'q')]
    quiet: bool,
    /// Resource group size in MB (32..2048).
    #[arg(short = 'r', default_value_t = DEFAULT_RG_MB)]
    rg_mb: u32,
    /// Lock table: cluster:fsname.
    #[arg(short = 't', default_value = "")]
    locktable: String,
    /// Filesystem UUID.
    #[arg(short = 'U')]
    uuid: Option<String>,
    /// Print the version.
    #[arg(short = 'V', action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// Device or file to format.
    device: PathBuf,
    /// Filesystem size in blocks (default: the whole device).
    blocks: Option<u64>,
}

fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        bail!("Failed to parse UUID option.");
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .context("Failed to parse UUID option.")?;
    }
    Ok(out)
}

fn confirm() -> Result<bool> {
    print!("Are you sure you want to proceed? [y/n] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_start().starts_with(['y', 'Y']))
}

/// Progress display: a bar on a terminal, "Done" lines otherwise.
struct Progress {
    quiet: bool,
    tty: bool,
    bar: Option<ProgressBar>,
    phase: Option<Phase>,
}

impl Progress {
    fn label(p: Phase) -> &'static str {
        match p {
            Phase::Journals => "Adding journals: ",
            Phase::ResourceGroups => "Building resource groups: ",
        }
    }

    fn update(&mut self, phase: Phase, done: u64, total: u64) {
        if self.quiet {
            return;
        }
        if self.phase != Some(phase) {
            self.finish();
            self.phase = Some(phase);
            if self.tty {
                let bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template("{msg}[{bar:40}] {pos}/{len}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_message(Self::label(phase));
                self.bar = Some(bar);
            } else {
                print!("{}", Self::label(phase));
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if let Some(p) = self.phase {
                println!("{}Done", Self::label(p));
            }
        } else if self.phase.is_some() && !self.tty {
            println!("Done");
        }
        self.phase = None;
    }
}

fn print_results(path: &str, r: &MkfsReport) {
    let gb = |bytes: f64| bytes / f64::from(1u32 << 30);
    println!("{:<27}{}", "Device:", path);
    println!("{:<27}{}", "Block size:", r.bsize);
    println!(
        "{:<27}{:.2} GB ({} blocks)",
        "Device size:",
        gb(r.device_bytes as f64),
        r.device_bytes / u64::from(r.bsize)
    );
    println!(
        "{:<27}{:.2} GB ({} blocks)",
        "Filesystem size:",
        gb(r.fs_blocks as f64 * f64::from(r.bsize)),
        r.fs_blocks
    );
    println!("{:<27}{}", "Journals:", r.journals);
    println!("{:<27}{}MB", "Journal size:", r.journal_mb);
    println!("{:<27}{}", "Resource groups:", r.rgrps);
    println!("{:<27}\"{}\"", "Locking protocol:", r.lockproto);
    println!("{:<27}\"{}\"", "Lock table:", r.locktable);
    println!("{:<27}{}", "UUID:", uuid_string(&r.uuid));
}

fn main() {
    tools::init_logging();
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("mkfs.clusterfs: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if args.qcsize != 1 {
        bail!("Bad quota change size: only 1 MB quota change files are supported");
    }
    let opts = MkfsOptions {
        lockproto: LockProto::parse(&args.lockproto)?,
        locktable: args.locktable.clone(),
        journals: args.journals,
        journal_mb: args.journal_mb,
        bsize: args.bsize,
        rg_mb: args.rg_mb,
        blocks: args.blocks,
        uuid: args.uuid.as_deref().map(parse_uuid).transpose()?,
        time: None,
    };
    clusterfs::mkfs::check_locktable(opts.lockproto, &opts.locktable)?;
    let dev = open_device(&args.device.to_string_lossy())
        .with_context(|| format!("{}", args.device.display()))?;
    if dev.size() == 0 {
        bail!("Device '{}' is too small", args.device.display());
    }
    let path = args.device.display().to_string();
    if !args.quiet {
        println!("This will destroy any data on {path}");
    }
    if !args.override_confirm && !confirm()? {
        println!("Aborted.");
        std::process::exit(1);
    }
    let mut progress = Progress {
        quiet: args.quiet,
        tty: std::io::stdout().is_terminal(),
        bar: None,
        phase: None,
    };
    let report = mkfs(dev.as_ref(), &opts, &mut |p, d, t| progress.update(p, d, t))?;
    progress.finish();
    if !args.quiet {
        println!("Writing superblock and syncing: Done");
        print_results(&path, &report);
    }
    Ok(())
}
