//! tgtadm: configures a running tgtd (tgt's flags and messages).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use iscsi::target::driver;
use iscsi::target::mgmt::{Mode, Op, Request};

#[derive(Parser, Debug)]
#[command(
    name = "tgtadm",
    about = "Linux SCSI Target Framework administration utility"
)]
struct Args {
    /// Low-level driver (only iscsi).
    #[arg(short = 'L', long = "lld", default_value = "iscsi")]
    lld: String,
    /// target, logicalunit, account or sys.
    #[arg(short = 'm', long = "mode")]
    mode: Option<String>,
    /// new, delete, show, bind, unbind or update.
    #[arg(short = 'o', long = "op")]
    op: Option<String>,
    #[arg(short = 't', long = "tid")]
    tid: Option<u32>,
    #[arg(short = 'T', long = "targetname")]
    targetname: Option<String>,
    #[arg(short = 'l', long = "lun")]
    lun: Option<u64>,
    #[arg(short = 'b', long = "backing-store")]
    backing_store: Option<String>,
    #[arg(short = 'E', long = "bstype")]
    bstype: Option<String>,
    /// Backing store open flags (accepted, ignored).
    #[arg(short = 'f', long = "bsoflags")]
    bsoflags: Option<String>,
    /// Device type (only disk).
    #[arg(short = 'Y', long = "device-type")]
    device_type: Option<String>,
    /// Logical block size of a new LUN.
    #[arg(short = 'y', long = "blocksize")]
    blocksize: Option<u32>,
    #[arg(short = 'I', long = "initiator-address")]
    initiator_address: Option<String>,
    #[arg(short = 'Q', long = "initiator-name")]
    initiator_name: Option<String>,
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    #[arg(short = 'p', long = "password")]
    password: Option<String>,
    #[arg(short = 'O', long = "outgoing")]
    outgoing: bool,
    #[arg(short = 'n', long = "name")]
    name: Option<String>,
    #[arg(short = 'v', long = "value")]
    value: Option<String>,
    #[arg(short = 'P', long = "params")]
    params: Option<String>,
    #[arg(short = 'F', long = "force")]
    force: bool,
    #[arg(short = 'C', long = "control-port", default_value_t = 0)]
    control_port: u32,
    /// Directory of the control socket (default: $TGT_CONTROL_DIR or /var/run/tgtd).
    #[arg(long = "control-dir")]
    control_dir: Option<PathBuf>,
}

/// Exit codes as tgt's tgtadm: 22 for a refused request, 1 for bad usage.
const EXIT_REFUSED: u8 = 22;
const EXIT_USAGE: u8 = 1;

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("tgtadm: {msg}");
    ExitCode::from(code)
}

fn parse_mode(s: &str) -> Option<Mode> {
    Some(match s {
        "target" | "tgt" => Mode::Target,
        "logicalunit" | "lu" => Mode::LogicalUnit,
        "account" => Mode::Account,
        "sys" | "system" => Mode::System,
        "metrics" => Mode::Metrics,
        _ => return None,
    })
}

fn parse_op(s: &str) -> Option<Op> {
    Some(match s {
        "new" => Op::New,
        "delete" => Op::Delete,
        "show" => Op::Show,
        "bind" => Op::Bind,
        "unbind" => Op::Unbind,
        "update" => Op::Update,
        _ => return None,
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.lld != "iscsi" {
        return fail(EXIT_USAGE, &format!("can't find the driver {}", args.lld));
    }
    let Some(mode_s) = args.mode.as_deref() else {
        return fail(EXIT_USAGE, "specify the mode (--mode)");
    };
    let Some(mode) = parse_mode(mode_s) else {
        return fail(EXIT_USAGE, &format!("unknown mode: {mode_s}"));
    };
    let Some(op_s) = args.op.as_deref() else {
        return fail(EXIT_USAGE, "specify the operation type (--op)");
    };
    let Some(op) = parse_op(op_s) else {
        return fail(EXIT_USAGE, &format!("unknown operation: {op_s}"));
    };
    if args.device_type.as_deref().is_some_and(|d| d != "disk") {
        return fail(EXIT_USAGE, "only --device-type disk is supported");
    }
    let mut params = args.params.clone();
    if let Some(bs) = args.blocksize {
        let extra = format!("block_size={bs}");
        params = Some(params.map_or(extra.clone(), |p| format!("{p},{extra}")));
    }
    let _ = &args.bsoflags;
    let req = Request {
        mode: Some(mode),
        op: Some(op),
        tid: args.tid,
        lun: args.lun,
        target_name: args.targetname,
        backing_store: args.backing_store,
        bstype: args.bstype,
        params,
        name: args.name,
        value: args.value,
        initiator_address: args.initiator_address,
        initiator_name: args.initiator_name,
        user: args.user,
        password: args.password,
        outgoing: args.outgoing,
        force: args.force,
    };
    let path = driver::control_path(&control_dir(args.control_dir.clone()), args.control_port);
    match driver::send_request(&path, &req) {
        Err(e) => {
            let code = e.raw_os_error().map_or(107, |c| c.clamp(1, 255) as u8);
            fail(
                code,
                &format!("failed to send request hdr to tgt daemon, {e}"),
            )
        }
        Ok(reply) if reply.code != 0 => fail(EXIT_REFUSED, &reply.message),
        Ok(reply) => {
            print!("{}", reply.output);
            ExitCode::SUCCESS
        }
    }
}

/// `--control-dir`, else `$TGT_CONTROL_DIR`, else /var/run/tgtd.
fn control_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("TGT_CONTROL_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/tgtd"))
}
