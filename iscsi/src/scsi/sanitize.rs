//! SANITIZE (SBC-3 5.30): OVERWRITE, BLOCK ERASE, CRYPTO ERASE and EXIT
//! FAILURE MODE. Runs to completion inside the command (IMMED is
//! honoured by simply being done when GOOD is returned).

use super::cdb::be16;
use super::lun::{CmdResult, Ctx, Disk, Lun};
use super::sense::Sense;

/// SANITIZE service actions.
pub(crate) mod sa {
    pub const OVERWRITE: u8 = 0x01;
    pub const BLOCK_ERASE: u8 = 0x02;
    pub const CRYPTO_ERASE: u8 = 0x03;
    pub const EXIT_FAILURE_MODE: u8 = 0x1f;
}

/// Bytes written per pwrite while overwriting.
const CHUNK_BYTES: usize = 1 << 20;

impl Lun {
    /// SANITIZE.
    pub(crate) fn sanitize(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        if let Some((byte, bit)) = c.desc.reserved_bits(c.cdb) {
            return Err(Sense::invalid_cdb(byte, Some(bit)).into());
        }
        let action = c.cdb[1] & 0x1f;
        let plen = usize::from(be16(c.cdb, 7));
        d.check_writable()?;
        match action {
            sa::OVERWRITE => {
                let p = c.data.get(..plen).ok_or_else(Sense::param_list_length)?;
                let (pattern, invert_last) = overwrite_params(p, plen, d.block_size as usize)?;
                overwrite(d, &pattern, invert_last)?;
            }
            sa::BLOCK_ERASE | sa::CRYPTO_ERASE | sa::EXIT_FAILURE_MODE => {
                if plen != 0 {
                    return Err(Sense::invalid_cdb(7, None).into());
                }
                if action != sa::EXIT_FAILURE_MODE {
                    let len = d.capacity() << d.block_shift;
                    let _exclusive = d.write_gate.write();
                    let r = if d.opts.thin {
                        d.backing.punch_hole(0, len)
                    } else {
                        d.backing.write_zeros(0, len)
                    };
                    r.map_err(|e| {
                        tracing::error!(error = %e, "SANITIZE failed");
                        Sense::new(
                            super::sense::key::MEDIUM_ERROR,
                            super::sense::Asc::WRITE_ERROR,
                        )
                    })?;
                }
            }
            _ => return Err(Sense::invalid_cdb(1, Some(4)).into()),
        }
        Ok(Vec::new())
    }
}

/// Decode the OVERWRITE parameter list (SBC-3 table 56): the pattern of
/// one block, and whether the last pass writes it inverted.
fn overwrite_params(p: &[u8], plen: usize, bs: usize) -> Result<(Vec<u8>, bool), Sense> {
    if plen < 5 || plen > bs + 4 {
        return Err(Sense::invalid_cdb(7, None));
    }
    let invert = p[0] & 0x80 != 0;
    let passes = p[0] & 0x1f;
    if passes == 0 {
        return Err(Sense::invalid_param(0, Some(4)));
    }
    let ip_len = usize::from(be16(p, 2));
    if ip_len == 0 || ip_len > bs || ip_len + 4 > plen {
        return Err(Sense::invalid_param(2, None));
    }
    let pattern: Vec<u8> = p[4..4 + ip_len].iter().copied().cycle().take(bs).collect();
    // With INVERT the passes alternate; only the last one is visible.
    Ok((pattern, invert && passes.is_multiple_of(2)))
}

fn overwrite(d: &Disk, block: &[u8], invert: bool) -> Result<(), Sense> {
    let per_chunk = (CHUNK_BYTES / block.len()).max(1);
    let chunk: Vec<u8> = block
        .iter()
        .map(|b| if invert { !b } else { *b })
        .cycle()
        .take(per_chunk * block.len())
        .collect();
    let total = d.capacity() << d.block_shift;
    let _exclusive = d.write_gate.write();
    let mut at = 0u64;
    while at < total {
        let n = (total - at).min(chunk.len() as u64) as usize;
        d.backing.write_at(&chunk[..n], at, false).map_err(|e| {
            tracing::error!(error = %e, "SANITIZE OVERWRITE failed");
            Sense::new(
                super::sense::key::MEDIUM_ERROR,
                super::sense::Asc::WRITE_ERROR,
            )
        })?;
        at += n as u64;
    }
    d.backing.sync().map_err(|_| {
        Sense::new(
            super::sense::key::MEDIUM_ERROR,
            super::sense::Asc::WRITE_ERROR,
        )
    })
}
