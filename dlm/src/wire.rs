//! Messages between nodes of a lockspace and their compact binary encoding.
//!
//! Every message travels in an [`Envelope`] tagged with the recovery
//! generation it belongs to; receivers drop older generations. The decoder
//! checks every length and value and returns [`WireError`] on garbage.

use crate::mode::Mode;
use crate::plock::{Family, Kind, Owner, Plock};
use crate::types::{Flags, LockId, Lvb, NodeId, ResName, SbFlags, Status, LVB_LEN};

/// Format version byte that starts every envelope.
pub const WIRE_VERSION: u8 = 1;
/// Upper bound on records in one recovery message (bounds decoding).
pub const MAX_RECORDS: usize = 1 << 16;

/// A lock as reported during recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecLock {
    /// Owner node.
    pub node: NodeId,
    /// Lock id on the owner.
    pub lkid: LockId,
    /// Granted mode.
    pub mode: Mode,
    /// Flags of the lock (PERSISTENT matters).
    pub flags: Flags,
}

/// Value block information reported during recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecLvb {
    /// The value.
    pub value: Lvb,
    /// Its sequence number.
    pub seq: u32,
    /// Whether the value is known valid (see `recovery`).
    pub valid: bool,
    /// True when it comes from the old master's copy.
    pub from_master: bool,
}

/// One message of the DLM protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Holder → master: new lock request.
    Request {
        name: ResName,
        lkid: LockId,
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
    },
    /// Holder → master: convert a granted lock.
    Convert {
        name: ResName,
        lkid: LockId,
        mode: Mode,
        flags: Flags,
        lvb: Option<Lvb>,
    },
    /// Holder → master: unlock.
    Unlock {
        name: ResName,
        lkid: LockId,
        flags: Flags,
        lvb: Option<Lvb>,
    },
    /// Holder → master: cancel a waiting request or conversion.
    Cancel { name: ResName, lkid: LockId },
    /// Master → holder: completion.
    Cast {
        name: ResName,
        lkid: LockId,
        status: Status,
        sbflags: SbFlags,
        lvb: Option<(Lvb, u32)>,
    },
    /// Master → holder: the granted mode was demoted to NL (CONVDEADLK).
    Demoted { name: ResName, lkid: LockId },
    /// Master → holder: blocking callback for `mode`.
    Bast {
        name: ResName,
        lkid: LockId,
        mode: Mode,
    },
    /// Any node → directory node: who masters `name`?
    Lookup { name: ResName },
    /// Directory node → asker.
    LookupReply { name: ResName, master: NodeId },
    /// A node without the master copy → holder: `name` is not mastered
    /// here (any more); look it up again and resend request `lkid`.
    NotMaster { name: ResName, lkid: LockId },
    /// Master → directory node: I freed my unused master copy of `name`.
    Remove { name: ResName },
    /// Any node → every node: drop the orphans of dead node `owner`.
    PurgeOrphans { owner: NodeId },
    /// Recovery, every node → directory node: my locks on `name`.
    RecLocks {
        name: ResName,
        was_master: bool,
        lvb: Option<RecLvb>,
        locks: Vec<RecLock>,
    },
    /// Recovery barrier 1: all my RecLocks are sent. `slot` is the slot
    /// the sender had before this recovery (0: none yet).
    RecDone1 { slot: u32 },
    /// Recovery, directory node → new master: rebuild `name` from these.
    RecMaster {
        name: ResName,
        lvb: Option<RecLvb>,
        locks: Vec<RecLock>,
    },
    /// Recovery, directory node → holders: `name` is mastered by `master`.
    RecSetMaster { name: ResName, master: NodeId },
    /// Recovery barrier 2: all my directory assignments are sent.
    RecDone2,
    /// Holder → plock master: a POSIX lock / flock operation.
    PlockReq {
        req: u64,
        fam: Family,
        file: u64,
        owner: u64,
        op: PlockOp,
    },
    /// Plock master → holder: result of request `req`.
    PlockReply { req: u64, result: PlockReply },
    /// Recovery, every node → new plock master: my granted plocks.
    RecPlocks { locks: Vec<(Family, u64, Plock)> },
}

/// A plock operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlockOp {
    /// F_SETLK / F_SETLKW.
    Lock {
        kind: Kind,
        start: u64,
        end: u64,
        wait: bool,
    },
    /// F_UNLCK.
    Unlock { start: u64, end: u64 },
    /// F_GETLK.
    Get { kind: Kind, start: u64, end: u64 },
    /// Withdraw a waiting F_SETLKW (the request with the same `req`).
    Cancel,
    /// The owner closed the file: drop all its locks.
    Close,
}

/// The result of a plock operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlockReply {
    /// Done (granted, unlocked, closed; or F_GETLK found no conflict).
    Ok,
    /// Conflict: EAGAIN for F_SETLK, the blocking lock for F_GETLK.
    Conflict(Plock),
    /// EDEADLK.
    Deadlock,
    /// The waiting request was cancelled.
    Canceled,
}

/// A message with the recovery generation it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Membership generation.
    pub gen: u64,
    /// The message.
    pub msg: Msg,
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ended early.
    #[error("truncated message")]
    Truncated,
    /// Unknown version byte.
    #[error("unsupported wire version {0}")]
    Version(u8),
    /// Unknown message type.
    #[error("unknown message type {0}")]
    Type(u8),
    /// A field had an impossible value.
    #[error("bad field {0}")]
    Field(&'static str),
    /// Bytes left over after the message.
    #[error("trailing bytes")]
    Trailing,
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn name(&mut self, n: &ResName) {
        self.u8(n.as_bytes().len() as u8);
        self.0.extend_from_slice(n.as_bytes());
    }
    fn lvb(&mut self, l: &Option<Lvb>) {
        match l {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.0.extend_from_slice(&v.0);
            }
        }
    }
    fn rec_lvb(&mut self, l: &Option<RecLvb>) {
        match l {
            None => self.u8(0),
            Some(r) => {
                self.u8(1 | (u8::from(r.valid) << 1) | (u8::from(r.from_master) << 2));
                self.0.extend_from_slice(&r.value.0);
                self.u32(r.seq);
            }
        }
    }
    fn plock(&mut self, p: &Plock) {
        self.u32(p.owner.node.0);
        self.u64(p.owner.id);
        self.u8(match p.kind {
            Kind::Read => 0,
            Kind::Write => 1,
        });
        self.u64(p.start);
        self.u64(p.end);
    }
    fn fam(&mut self, f: Family) {
        self.u8(match f {
            Family::Posix => 0,
            Family::Flock => 1,
        });
    }
    fn locks(&mut self, locks: &[RecLock]) {
        self.u32(locks.len() as u32);
        for l in locks {
            self.u32(l.node.0);
            self.u32(l.lkid.0);
            self.u8(l.mode as u8);
            self.u32(l.flags.0);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn mode(&mut self) -> Result<Mode, WireError> {
        Mode::from_u8(self.u8()?).ok_or(WireError::Field("mode"))
    }
    fn name(&mut self) -> Result<ResName, WireError> {
        let n = usize::from(self.u8()?);
        ResName::new(self.take(n)?).ok_or(WireError::Field("name"))
    }
    fn raw_lvb(&mut self) -> Result<Lvb, WireError> {
        let mut v = [0u8; LVB_LEN];
        v.copy_from_slice(self.take(LVB_LEN)?);
        Ok(Lvb(v))
    }
    fn lvb(&mut self) -> Result<Option<Lvb>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.raw_lvb()?)),
            _ => Err(WireError::Field("lvb")),
        }
    }
    fn rec_lvb(&mut self) -> Result<Option<RecLvb>, WireError> {
        let tag = self.u8()?;
        if tag == 0 {
            return Ok(None);
        }
        if tag & !7 != 0 || tag & 1 == 0 {
            return Err(WireError::Field("rec lvb"));
        }
        let value = self.raw_lvb()?;
        let seq = self.u32()?;
        Ok(Some(RecLvb {
            value,
            seq,
            valid: tag & 2 != 0,
            from_master: tag & 4 != 0,
        }))
    }
    fn kind(&mut self) -> Result<Kind, WireError> {
        match self.u8()? {
            0 => Ok(Kind::Read),
            1 => Ok(Kind::Write),
            _ => Err(WireError::Field("plock kind")),
        }
    }
    fn fam(&mut self) -> Result<Family, WireError> {
        match self.u8()? {
            0 => Ok(Family::Posix),
            1 => Ok(Family::Flock),
            _ => Err(WireError::Field("plock family")),
        }
    }
    fn range(&mut self) -> Result<(u64, u64), WireError> {
        let (s, e) = (self.u64()?, self.u64()?);
        if s > e {
            return Err(WireError::Field("plock range"));
        }
        Ok((s, e))
    }
    fn plock(&mut self) -> Result<Plock, WireError> {
        let owner = Owner {
            node: NodeId(self.u32()?),
            id: self.u64()?,
        };
        let kind = self.kind()?;
        let (start, end) = self.range()?;
        Ok(Plock {
            owner,
            kind,
            start,
            end,
        })
    }
    fn locks(&mut self) -> Result<Vec<RecLock>, WireError> {
        let n = self.u32()? as usize;
        if n > MAX_RECORDS || n * 13 > self.0.len() {
            return Err(WireError::Field("record count"));
        }
        (0..n)
            .map(|_| {
                Ok(RecLock {
                    node: NodeId(self.u32()?),
                    lkid: LockId(self.u32()?),
                    mode: self.mode()?,
                    flags: Flags(self.u32()?),
                })
            })
            .collect()
    }
}

impl Envelope {
    /// Appends the encoding to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let mut w = Writer(buf);
        w.u8(WIRE_VERSION);
        w.u64(self.gen);
        encode_msg(&mut w, &self.msg);
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        self.encode(&mut v);
        v
    }

    /// Decodes exactly one envelope from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
        let mut r = Reader(bytes);
        let v = r.u8()?;
        if v != WIRE_VERSION {
            return Err(WireError::Version(v));
        }
        let gen = r.u64()?;
        let msg = decode_msg(&mut r)?;
        if !r.0.is_empty() {
            return Err(WireError::Trailing);
        }
        Ok(Envelope { gen, msg })
    }
}

fn encode_msg(w: &mut Writer<'_>, msg: &Msg) {
    match msg {
        Msg::Request {
            name,
            lkid,
            mode,
            flags,
            lvb,
        }
        | Msg::Convert {
            name,
            lkid,
            mode,
            flags,
            lvb,
        } => {
            w.u8(if matches!(msg, Msg::Request { .. }) {
                1
            } else {
                2
            });
            w.name(name);
            w.u32(lkid.0);
            w.u8(*mode as u8);
            w.u32(flags.0);
            w.lvb(lvb);
        }
        Msg::Unlock {
            name,
            lkid,
            flags,
            lvb,
        } => {
            w.u8(3);
            w.name(name);
            w.u32(lkid.0);
            w.u32(flags.0);
            w.lvb(lvb);
        }
        Msg::Cancel { name, lkid }
        | Msg::Demoted { name, lkid }
        | Msg::NotMaster { name, lkid } => {
            w.u8(match msg {
                Msg::Cancel { .. } => 4,
                Msg::Demoted { .. } => 6,
                _ => 18,
            });
            w.name(name);
            w.u32(lkid.0);
        }
        Msg::Remove { name } => {
            w.u8(19);
            w.name(name);
        }
        Msg::PurgeOrphans { owner } => {
            w.u8(20);
            w.u32(owner.0);
        }
        Msg::Cast {
            name,
            lkid,
            status,
            sbflags,
            lvb,
        } => {
            w.u8(5);
            w.name(name);
            w.u32(lkid.0);
            let (c, m) = status.code();
            w.u8(c);
            w.u8(m);
            w.u8(sbflags.0);
            w.lvb(&lvb.map(|(v, _)| v));
            w.u32(lvb.map_or(0, |(_, s)| s));
        }
        Msg::Bast { name, lkid, mode } => {
            w.u8(7);
            w.name(name);
            w.u32(lkid.0);
            w.u8(*mode as u8);
        }
        Msg::Lookup { name } => {
            w.u8(8);
            w.name(name);
        }
        Msg::LookupReply { name, master } | Msg::RecSetMaster { name, master } => {
            w.u8(if matches!(msg, Msg::LookupReply { .. }) {
                9
            } else {
                13
            });
            w.name(name);
            w.u32(master.0);
        }
        Msg::RecLocks {
            name,
            was_master,
            lvb,
            locks,
        } => {
            w.u8(10);
            w.name(name);
            w.u8(u8::from(*was_master));
            w.rec_lvb(lvb);
            w.locks(locks);
        }
        Msg::RecDone1 { slot } => {
            w.u8(11);
            w.u32(*slot);
        }
        Msg::RecMaster { name, lvb, locks } => {
            w.u8(12);
            w.name(name);
            w.rec_lvb(lvb);
            w.locks(locks);
        }
        Msg::RecDone2 => w.u8(14),
        Msg::PlockReq {
            req,
            fam,
            file,
            owner,
            op,
        } => {
            w.u8(15);
            w.u64(*req);
            w.fam(*fam);
            w.u64(*file);
            w.u64(*owner);
            match *op {
                PlockOp::Lock {
                    kind,
                    start,
                    end,
                    wait,
                } => {
                    w.u8(if wait { 1 } else { 0 });
                    w.u8(kind as u8);
                    w.u64(start);
                    w.u64(end);
                }
                PlockOp::Unlock { start, end } => {
                    w.u8(2);
                    w.u64(start);
                    w.u64(end);
                }
                PlockOp::Get { kind, start, end } => {
                    w.u8(3);
                    w.u8(kind as u8);
                    w.u64(start);
                    w.u64(end);
                }
                PlockOp::Cancel => w.u8(4),
                PlockOp::Close => w.u8(5),
            }
        }
        Msg::PlockReply { req, result } => {
            w.u8(16);
            w.u64(*req);
            match result {
                PlockReply::Ok => w.u8(0),
                PlockReply::Conflict(p) => {
                    w.u8(1);
                    w.plock(p);
                }
                PlockReply::Deadlock => w.u8(2),
                PlockReply::Canceled => w.u8(3),
            }
        }
        Msg::RecPlocks { locks } => {
            w.u8(17);
            w.u32(locks.len() as u32);
            for (fam, file, p) in locks {
                w.fam(*fam);
                w.u64(*file);
                w.plock(p);
            }
        }
    }
}

fn decode_msg(r: &mut Reader<'_>) -> Result<Msg, WireError> {
    let t = r.u8()?;
    Ok(match t {
        1 | 2 => {
            let (name, lkid, mode, flags, lvb) = (
                r.name()?,
                LockId(r.u32()?),
                r.mode()?,
                Flags(r.u32()?),
                r.lvb()?,
            );
            if t == 1 {
                Msg::Request {
                    name,
                    lkid,
                    mode,
                    flags,
                    lvb,
                }
            } else {
                Msg::Convert {
                    name,
                    lkid,
                    mode,
                    flags,
                    lvb,
                }
            }
        }
        3 => Msg::Unlock {
            name: r.name()?,
            lkid: LockId(r.u32()?),
            flags: Flags(r.u32()?),
            lvb: r.lvb()?,
        },
        4 => Msg::Cancel {
            name: r.name()?,
            lkid: LockId(r.u32()?),
        },
        6 => Msg::Demoted {
            name: r.name()?,
            lkid: LockId(r.u32()?),
        },
        18 => Msg::NotMaster {
            name: r.name()?,
            lkid: LockId(r.u32()?),
        },
        19 => Msg::Remove { name: r.name()? },
        20 => Msg::PurgeOrphans {
            owner: NodeId(r.u32()?),
        },
        5 => {
            let name = r.name()?;
            let lkid = LockId(r.u32()?);
            let (c, m) = (r.u8()?, r.u8()?);
            let status = Status::from_code(c, m).ok_or(WireError::Field("status"))?;
            let sbflags = SbFlags(r.u8()?);
            let lvb = r.lvb()?;
            let seq = r.u32()?;
            Msg::Cast {
                name,
                lkid,
                status,
                sbflags,
                lvb: lvb.map(|v| (v, seq)),
            }
        }
        7 => Msg::Bast {
            name: r.name()?,
            lkid: LockId(r.u32()?),
            mode: r.mode()?,
        },
        8 => Msg::Lookup { name: r.name()? },
        9 => Msg::LookupReply {
            name: r.name()?,
            master: NodeId(r.u32()?),
        },
        13 => Msg::RecSetMaster {
            name: r.name()?,
            master: NodeId(r.u32()?),
        },
        10 => {
            let name = r.name()?;
            let was_master = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(WireError::Field("was_master")),
            };
            Msg::RecLocks {
                name,
                was_master,
                lvb: r.rec_lvb()?,
                locks: r.locks()?,
            }
        }
        11 => Msg::RecDone1 { slot: r.u32()? },
        12 => Msg::RecMaster {
            name: r.name()?,
            lvb: r.rec_lvb()?,
            locks: r.locks()?,
        },
        14 => Msg::RecDone2,
        15 => {
            let (req, fam, file, owner) = (r.u64()?, r.fam()?, r.u64()?, r.u64()?);
            let op = match r.u8()? {
                t @ (0 | 1) => {
                    let kind = r.kind()?;
                    let (start, end) = r.range()?;
                    PlockOp::Lock {
                        kind,
                        start,
                        end,
                        wait: t == 1,
                    }
                }
                2 => {
                    let (start, end) = r.range()?;
                    PlockOp::Unlock { start, end }
                }
                3 => {
                    let kind = r.kind()?;
                    let (start, end) = r.range()?;
                    PlockOp::Get { kind, start, end }
                }
                4 => PlockOp::Cancel,
                5 => PlockOp::Close,
                _ => return Err(WireError::Field("plock op")),
            };
            Msg::PlockReq {
                req,
                fam,
                file,
                owner,
                op,
            }
        }
        16 => {
            let req = r.u64()?;
            let result = match r.u8()? {
                0 => PlockReply::Ok,
                1 => PlockReply::Conflict(r.plock()?),
                2 => PlockReply::Deadlock,
                3 => PlockReply::Canceled,
                _ => return Err(WireError::Field("plock result")),
            };
            Msg::PlockReply { req, result }
        }
        17 => {
            let n = r.u32()? as usize;
            if n > MAX_RECORDS || n * 38 > r.0.len() {
                return Err(WireError::Field("record count"));
            }
            let locks = (0..n)
                .map(|_| Ok((r.fam()?, r.u64()?, r.plock()?)))
                .collect::<Result<_, WireError>>()?;
            Msg::RecPlocks { locks }
        }
        t => return Err(WireError::Type(t)),
    })
}

/// One message of each kind, every field set: the inputs of the
/// round-trip tests and the seeds of the fuzz corpus.
pub fn samples() -> Vec<Msg> {
    let name = ResName::new(b"res-1").unwrap();
    let lvb = Some(Lvb([3; LVB_LEN]));
    let locks = vec![RecLock {
        node: NodeId(2),
        lkid: LockId(7),
        mode: Mode::Pr,
        flags: Flags::PERSISTENT,
    }];
    let rl = Some(RecLvb {
        value: Lvb([1; LVB_LEN]),
        seq: 9,
        valid: true,
        from_master: false,
    });
    let plock = Plock {
        owner: Owner {
            node: NodeId(2),
            id: 4,
        },
        kind: Kind::Read,
        start: 3,
        end: 30,
    };
    let lkid = LockId(1);
    vec![
        Msg::Request {
            name,
            lkid,
            mode: Mode::Ex,
            flags: Flags::VALBLK,
            lvb: None,
        },
        Msg::Convert {
            name,
            lkid,
            mode: Mode::Nl,
            flags: Flags::VALBLK,
            lvb,
        },
        Msg::Unlock {
            name,
            lkid,
            flags: Flags(0),
            lvb,
        },
        Msg::Cancel { name, lkid },
        Msg::Cast {
            name,
            lkid,
            status: Status::Granted(Mode::Pw),
            sbflags: SbFlags::DEMOTED,
            lvb: Some((Lvb([5; LVB_LEN]), 4)),
        },
        Msg::Cast {
            name,
            lkid,
            status: Status::Canceled,
            sbflags: SbFlags::default(),
            lvb: None,
        },
        Msg::Demoted { name, lkid },
        Msg::Bast {
            name,
            lkid,
            mode: Mode::Cw,
        },
        Msg::Lookup { name },
        Msg::LookupReply {
            name,
            master: NodeId(3),
        },
        Msg::NotMaster { name, lkid },
        Msg::Remove { name },
        Msg::PurgeOrphans { owner: NodeId(7) },
        Msg::RecLocks {
            name,
            was_master: true,
            lvb: rl,
            locks: locks.clone(),
        },
        Msg::RecDone1 { slot: 3 },
        Msg::RecMaster {
            name,
            lvb: None,
            locks,
        },
        Msg::RecSetMaster {
            name,
            master: NodeId(1),
        },
        Msg::RecDone2,
        Msg::PlockReq {
            req: 5,
            fam: Family::Posix,
            file: 9,
            owner: 77,
            op: PlockOp::Lock {
                kind: Kind::Write,
                start: 1,
                end: 9,
                wait: true,
            },
        },
        Msg::PlockReq {
            req: 6,
            fam: Family::Flock,
            file: 9,
            owner: 77,
            op: PlockOp::Unlock {
                start: 0,
                end: u64::MAX,
            },
        },
        Msg::PlockReq {
            req: 7,
            fam: Family::Posix,
            file: 9,
            owner: 77,
            op: PlockOp::Get {
                kind: Kind::Read,
                start: 1,
                end: 2,
            },
        },
        Msg::PlockReq {
            req: 8,
            fam: Family::Posix,
            file: 9,
            owner: 77,
            op: PlockOp::Close,
        },
        Msg::PlockReply {
            req: 5,
            result: PlockReply::Conflict(plock),
        },
        Msg::PlockReply {
            req: 6,
            result: PlockReply::Deadlock,
        },
        Msg::RecPlocks {
            locks: vec![(Family::Posix, 9, plock)],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips() {
        for (i, msg) in samples().into_iter().enumerate() {
            let env = Envelope {
                gen: 42 + i as u64,
                msg,
            };
            assert_eq!(Envelope::decode(&env.to_bytes()), Ok(env));
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        for msg in samples() {
            let bytes = Envelope { gen: 1, msg }.to_bytes();
            for n in 0..bytes.len() {
                assert!(Envelope::decode(&bytes[..n]).is_err(), "prefix {n}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(Envelope::decode(&long), Err(WireError::Trailing));
        }
    }

    #[test]
    fn bad_fields_are_rejected() {
        assert_eq!(Envelope::decode(&[9]), Err(WireError::Version(9)));
        let mut b = vec![WIRE_VERSION];
        b.extend_from_slice(&0u64.to_le_bytes());
        b.push(99);
        assert_eq!(Envelope::decode(&b), Err(WireError::Type(99)));
        let mut b = Envelope {
            gen: 0,
            msg: Msg::Bast {
                name: ResName::new(b"a").unwrap(),
                lkid: LockId(0),
                mode: Mode::Ex,
            },
        }
        .to_bytes();
        *b.last_mut().unwrap() = 6;
        assert_eq!(Envelope::decode(&b), Err(WireError::Field("mode")));
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Envelope::decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(i in 0usize..64, pos in 0usize..200, val in proptest::prelude::any::<u8>()) {
            let all = samples();
            let mut bytes = Envelope { gen: 7, msg: all[i % all.len()].clone() }.to_bytes();
            let p = pos % bytes.len();
            bytes[p] = val;
            if let Ok(env) = Envelope::decode(&bytes) {
                proptest::prop_assert_eq!(Envelope::decode(&env.to_bytes()), Ok(env));
            }
        }
    }
}
