//! Shared helpers of the iscsi_target_* tests: a tgtd started on a free
//! loopback port with its own control directory, tgtadm calls, and a raw
//! iSCSI client for the cases libiscsi cannot produce (bad PDUs, mutual
//! CHAP, session reinstatement). Included by the other files with
//! `#[path]`; on its own it holds no tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use iscsi::pdu::{self, flags, login, opcode, Bhs, Digests, Pdu};

/// Generous: the CI machine is small and shared.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A running tgtd (started with `tests::spawn`), killed (by PID) on drop.
pub struct Tgtd {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Tgtd {
    /// Starts tgtd on 127.0.0.1 and a free port, retrying if another
    /// process takes the port first.
    pub fn start() -> Tgtd {
        Tgtd::start_with(&[])
    }

    /// [`Tgtd::start`] with `extra` arguments (`--metrics ADDR:PORT`).
    pub fn start_with(extra: &[&str]) -> Tgtd {
        for _ in 0..10 {
            let port = tests::free_port();
            let dir = tempfile::tempdir().expect("tempdir");
            let mut child = tests::spawn(
                Command::new(tests::bin("tgtd"))
                    .args([
                        "-f",
                        "--iscsi",
                        &format!("portal=127.0.0.1:{port}"),
                        "-C",
                        "0",
                    ])
                    .arg("--control-dir")
                    .arg(dir.path())
                    .arg("--state-dir")
                    .arg(dir.path().join("state"))
                    .args(extra)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .expect("spawn tgtd");
            if wait_ready(&mut child, port, dir.path()) {
                return Tgtd { child, port, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("tgtd did not start");
    }

    /// Runs tgtadm against this daemon.
    pub fn adm(&self, args: &[&str]) -> Output {
        Command::new(tests::bin("tgtadm"))
            .arg("--control-dir")
            .arg(self.dir.path())
            .args(["-C", "0", "--lld", "iscsi"])
            .args(args)
            .output()
            .expect("run tgtadm")
    }

    /// Runs tgtadm and panics unless it succeeds; returns stdout.
    pub fn adm_ok(&self, args: &[&str]) -> String {
        let out = self.adm(args);
        assert!(
            out.status.success(),
            "tgtadm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A file of `mb` MiB in the daemon's directory.
    pub fn backing_file(&self, name: &str, mb: u64) -> PathBuf {
        let path = self.dir.path().join(name);
        let f = std::fs::File::create(&path).expect("create backing file");
        f.set_len(mb << 20).expect("size backing file");
        path
    }

    /// The tutorial's three commands: target `tid` named `iqn` with LUN 1
    /// on a new file, open to every address.
    pub fn tutorial_target(&self, tid: u32, iqn: &str) -> PathBuf {
        let file = self.backing_file(&format!("lun{tid}.img"), 64);
        self.export(tid, iqn, &file);
        file
    }

    /// Target `tid` named `iqn` with LUN 1 on `file`, open to every address.
    pub fn export(&self, tid: u32, iqn: &str, file: &Path) {
        let tid_s = tid.to_string();
        self.adm_ok(&[
            "--op", "new", "--mode", "target", "--tid", &tid_s, "-T", iqn,
        ]);
        self.adm_ok(&[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            &tid_s,
            "--lun",
            "1",
            "-b",
            file.to_str().unwrap(),
        ]);
        self.adm_ok(&[
            "--op", "bind", "--mode", "target", "--tid", &tid_s, "-I", "ALL",
        ]);
    }

    /// Stops the daemon (by PID); its directory and backing files stay
    /// until the value is dropped.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True while the daemon process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// An iscsi:// URL for a LUN of this daemon.
    pub fn url(&self, iqn: &str, lun: u32) -> String {
        format!("iscsi://127.0.0.1:{}/{iqn}/{lun}", self.port)
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_ready(child: &mut Child, port: u16, dir: &Path) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        // Connecting, not just finding the file: the socket exists from
        // its bind, a moment before it listens.
        let sock = dir.join("socket.0");
        if std::os::unix::net::UnixStream::connect(&sock).is_ok()
            && TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs an external program with a deadline; returns its output.
pub fn run(program: &str, args: &[&str]) -> Output {
    let child = tests::spawn(
        Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    wait_output(child, Duration::from_secs(600))
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("collect output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait_with_output().expect("collect output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when the external tools these tests need (libiscsi-bin) are
/// installed; otherwise records a skip (a failure under CI).
pub fn have_libiscsi() -> bool {
    tests::require_all(&["iscsi-ls", "iscsi-inq", "iscsi-test-cu"])
}

/// A raw iSCSI connection for protocol-level tests.
pub struct Raw {
    pub stream: TcpStream,
    pub digests: Digests,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub itt: u32,
    pub isid: [u8; 6],
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            digests: Digests::default(),
            cmd_sn: 1,
            exp_stat_sn: 0,
            itt: 1,
            isid: [0x80, 0, 0, 0x12, 0x34, 0x56],
        }
    }

    pub fn send(&mut self, pdu: &Pdu) {
        self.stream
            .write_all(&pdu.encode(self.digests))
            .expect("send PDU");
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send bytes");
    }

    /// The next PDU, or an error when the target closed the connection.
    pub fn recv(&mut self) -> Result<Pdu, pdu::PduError> {
        let p = Pdu::read_from(&mut self.stream, self.digests, 1 << 24)?;
        if matches!(
            p.bhs.opcode(),
            opcode::NOP_IN
                | opcode::SCSI_RSP
                | opcode::LOGIN_RSP
                | opcode::TEXT_RSP
                | opcode::LOGOUT_RSP
                | opcode::TASK_MGMT_RSP
                | opcode::REJECT
        ) || (p.bhs.opcode() == opcode::DATA_IN && p.bhs.flags() & flags::STATUS != 0)
        {
            self.exp_stat_sn = p.bhs.u32_at(24).wrapping_add(1);
        }
        Ok(p)
    }

    /// True when the target closed the connection (EOF or reset) before
    /// sending anything more.
    pub fn closed_by_target(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }

    fn next_itt(&mut self) -> u32 {
        self.itt += 1;
        self.itt
    }

    /// One login request PDU.
    pub fn login_pdu(&mut self, csg: u8, nsg: u8, transit: bool, keys: &[(&str, &str)]) -> Pdu {
        let mut bhs = Bhs::new(opcode::LOGIN_REQ);
        bhs.set_immediate(true);
        let t = if transit { flags::TRANSIT } else { 0 };
        bhs.set_flags(t | (csg << 2) | nsg);
        bhs.0[login::ISID..login::ISID + 6].copy_from_slice(&self.isid);
        let itt = self.next_itt();
        bhs.set_itt(itt);
        bhs.set_u32_at(login::CMD_SN, self.cmd_sn);
        bhs.set_u32_at(login::EXP_STAT_SN, self.exp_stat_sn);
        let mut p = Pdu::new(bhs);
        p.data = pdu::keys::encode(keys.iter().copied());
        p
    }

    /// Sends a login request and returns the response status and keys.
    pub fn login_step(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, Bhs) {
        let p = self.login_pdu(csg, nsg, transit, keys);
        self.send(&p);
        let rsp = self.recv().expect("login response");
        assert_eq!(rsp.bhs.opcode(), opcode::LOGIN_RSP);
        let status = u16::from_be_bytes([
            rsp.bhs.u8_at(login::STATUS_CLASS),
            rsp.bhs.u8_at(login::STATUS_DETAIL),
        ]);
        let keys = pdu::keys::parse(&rsp.data).expect("login keys");
        (status, keys, rsp.bhs)
    }

    /// A whole login without authentication, straight to full feature
    /// phase through the operational stage. Returns the TSIH.
    pub fn login_normal(&mut self, initiator: &str, target: &str, op_keys: &[(&str, &str)]) -> u16 {
        let (status, _, _) = self.login_step(
            0,
            1,
            true,
            &[
                ("InitiatorName", initiator),
                ("SessionType", "Normal"),
                ("TargetName", target),
                ("AuthMethod", "None"),
            ],
        );
        assert_eq!(status, 0, "security stage refused");
        let (status, keys, bhs) = self.login_step(1, 3, true, op_keys);
        assert_eq!(status, 0, "operational stage refused");
        // Digests start with the first PDU after the login response.
        for (k, v) in keys {
            match k.as_str() {
                "HeaderDigest" => self.digests.header = v == "CRC32C",
                "DataDigest" => self.digests.data = v == "CRC32C",
                _ => {}
            }
        }
        assert_ne!(
            bhs.flags() & flags::TRANSIT,
            0,
            "no transit to full feature"
        );
        bhs.u16_at(login::TSIH)
    }

    /// TEST UNIT READY until GOOD: a new I_T nexus first sees the unit
    /// attention POWER ON / RESET (SAM-5 5.14).
    pub fn clear_unit_attention(&mut self, lun: u64) {
        for _ in 0..5 {
            let p = self.scsi_cmd(lun, &[0u8; 6], 0, 0);
            let itt = p.bhs.itt();
            self.send(&p);
            loop {
                let rsp = self.recv().expect("TEST UNIT READY response");
                if rsp.bhs.opcode() == opcode::SCSI_RSP && rsp.bhs.itt() == itt {
                    if rsp.bhs.u8_at(pdu::scsi_rsp::STATUS) == 0 {
                        return;
                    }
                    break;
                }
            }
        }
        panic!("LUN {lun} stays not ready");
    }

    /// NOP-Out ping with `data`; returns the NOP-In's data.
    pub fn ping(&mut self, data: &[u8]) -> Vec<u8> {
        let p = self.nop_out(data);
        self.send(&p);
        loop {
            let rsp = self.recv().expect("NOP-In");
            if rsp.bhs.opcode() == opcode::NOP_IN && rsp.bhs.itt() == p.bhs.itt() {
                return rsp.data;
            }
        }
    }

    pub fn nop_out(&mut self, data: &[u8]) -> Pdu {
        let mut bhs = Bhs::new(opcode::NOP_OUT);
        bhs.set_immediate(true);
        bhs.set_flags(flags::FINAL);
        let itt = self.next_itt();
        bhs.set_itt(itt);
        bhs.set_u32_at(pdu::nop::TTT, pdu::RESERVED_TAG);
        bhs.set_u32_at(pdu::nop::CMD_SN, self.cmd_sn);
        bhs.set_u32_at(pdu::nop::EXP_STAT_SN, self.exp_stat_sn);
        let mut p = Pdu::new(bhs);
        p.data = data.to_vec();
        p
    }

    /// A SCSI Command PDU (non-immediate; advances CmdSN).
    pub fn scsi_cmd(&mut self, lun: u64, cdb: &[u8], read_len: u32, write_len: u32) -> Pdu {
        let mut bhs = Bhs::new(opcode::SCSI_CMD);
        let mut f = flags::FINAL | 1; // SIMPLE task attribute
        if read_len > 0 {
            f |= flags::READ;
        }
        if write_len > 0 {
            f |= flags::WRITE;
        }
        bhs.set_flags(f);
        bhs.set_lun(lun);
        let itt = self.next_itt();
        bhs.set_itt(itt);
        bhs.set_u32_at(pdu::scsi_cmd::EDTL, read_len.max(write_len));
        bhs.set_u32_at(pdu::scsi_cmd::CMD_SN, self.cmd_sn);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        bhs.set_u32_at(pdu::scsi_cmd::EXP_STAT_SN, self.exp_stat_sn);
        bhs.0[32..32 + cdb.len()].copy_from_slice(cdb);
        Pdu::new(bhs)
    }

    /// READ(10) of `blocks` 512-byte blocks at `lba`; returns the data and
    /// the status.
    pub fn read10(&mut self, lun: u64, lba: u32, blocks: u16) -> (Vec<u8>, u8) {
        let mut cdb = [0u8; 10];
        cdb[0] = 0x28;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
        let p = self.scsi_cmd(lun, &cdb, u32::from(blocks) * 512, 0);
        let itt = p.bhs.itt();
        self.send(&p);
        let mut data = Vec::new();
        loop {
            let rsp = self.recv().expect("read response");
            if rsp.bhs.itt() != itt {
                continue;
            }
            match rsp.bhs.opcode() {
                opcode::DATA_IN => {
                    let off = rsp.bhs.u32_at(pdu::data_in::BUFFER_OFFSET) as usize;
                    assert_eq!(off, data.len(), "Data-In out of order");
                    data.extend_from_slice(&rsp.data);
                    if rsp.bhs.flags() & flags::STATUS != 0 {
                        return (data, rsp.bhs.u8_at(pdu::data_in::STATUS));
                    }
                }
                opcode::SCSI_RSP => return (data, rsp.bhs.u8_at(pdu::scsi_rsp::STATUS)),
                op => panic!("unexpected opcode {op:#x}"),
            }
        }
    }
}
