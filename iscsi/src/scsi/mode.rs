//! Mode parameters (SPC-4 7.5, SBC-3 6.4): the caching, control and
//! informational exceptions pages, MODE SENSE(6/10) with every page
//! control, and MODE SELECT(6/10) of the changeable bits (WCE, SWP).

use super::cdb::{be16, op};
use super::lun::{CmdResult, Ctx, Lun};
use super::sense::{Asc, Sense};
use super::spc::truncate;

/// One mode page: its default value and the mask of changeable bits.
struct PageDef {
    code: u8,
    default: &'static [u8],
    changeable: &'static [u8],
}

/// Caching (SBC-3 6.4.5): WCE set and changeable.
const CACHING: PageDef = PageDef {
    code: 0x08,
    default: &[
        0x08, 0x12, 0x04, 0, 0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x14, 0xff, 0xff, 0, 0,
        0, 0,
    ],
    changeable: &[
        0, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ],
};

/// Control (SPC-4 7.5.8): QAM 1 (unrestricted reordering), SWP changeable.
const CONTROL: PageDef = PageDef {
    code: 0x0a,
    default: &[0x0a, 0x0a, 0x00, 0x10, 0x00, 0x00, 0, 0, 0xff, 0xff, 0, 0],
    changeable: &[0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0],
};

/// Informational exceptions control (SPC-4 7.5.12): DEXCPT set.
const INFORMATIONAL_EXCEPTIONS: PageDef = PageDef {
    code: 0x1c,
    default: &[0x1c, 0x0a, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    changeable: &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
};

const PAGES: [&PageDef; 3] = [&CACHING, &CONTROL, &INFORMATIONAL_EXCEPTIONS];
const ALL_PAGES: u8 = 0x3f;

/// The current mode page values of one LUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeState {
    current: Vec<Vec<u8>>,
}

impl Default for ModeState {
    fn default() -> Self {
        ModeState {
            current: PAGES.iter().map(|p| p.default.to_vec()).collect(),
        }
    }
}

impl ModeState {
    /// WCE of the caching page.
    pub fn write_cache_enabled(&self) -> bool {
        self.current[0][2] & 0x04 != 0
    }

    /// SWP of the control page.
    pub fn software_write_protect(&self) -> bool {
        self.current[1][4] & 0x08 != 0
    }

    fn page(&self, pc: u8, i: usize) -> Vec<u8> {
        let def = PAGES[i];
        match pc {
            0 => self.current[i].clone(),
            1 => {
                let mut v = def.changeable.to_vec();
                v[0] = def.code;
                v[1] = def.default[1];
                v
            }
            _ => def.default.to_vec(),
        }
    }
}

/// Which page indexes a MODE SENSE asks for.
fn select_pages(page: u8, subpage: u8) -> Result<Vec<usize>, Sense> {
    if page == ALL_PAGES {
        if subpage != 0 && subpage != 0xff {
            return Err(Sense::invalid_cdb(3, None));
        }
        return Ok((0..PAGES.len()).collect());
    }
    let i = PAGES
        .iter()
        .position(|p| p.code == page)
        .ok_or_else(|| Sense::invalid_cdb(2, Some(5)))?;
    if subpage != 0 {
        return Err(Sense::invalid_cdb(3, None));
    }
    Ok(vec![i])
}

impl Lun {
    /// MODE SENSE(6/10) (SPC-4 6.11, 6.12).
    pub(crate) fn mode_sense(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        let cdb = c.cdb;
        let ten = cdb[0] == op::MODE_SENSE_10;
        let dbd = cdb[1] & 0x08 != 0;
        let llbaa = ten && cdb[1] & 0x10 != 0;
        let pc = cdb[2] >> 6;
        let alloc = if ten {
            usize::from(be16(cdb, 7))
        } else {
            usize::from(cdb[4])
        };
        let wanted = select_pages(cdb[2] & 0x3f, cdb[3])?;
        let mode = d.mode.lock().clone();
        let mut pages = Vec::new();
        for i in wanted {
            pages.extend_from_slice(&mode.page(pc, i));
        }
        let wp = d.opts.readonly || mode.software_write_protect();
        let dsp = if wp { 0x80 } else { 0 } | 0x10; // WP, DPOFUA
        let blocks = d.capacity();
        let bd = if dbd {
            Vec::new()
        } else if llbaa {
            let mut b = vec![0u8; 16];
            b[0..8].copy_from_slice(&blocks.to_be_bytes());
            b[12..16].copy_from_slice(&d.block_size.to_be_bytes());
            b
        } else {
            let mut b = vec![0u8; 8];
            b[0..4].copy_from_slice(&u32::try_from(blocks).unwrap_or(u32::MAX).to_be_bytes());
            b[4..8].copy_from_slice(&d.block_size.to_be_bytes());
            b[4] = 0;
            b
        };
        let mut out = if ten {
            let mut h = vec![0u8; 8];
            h[3] = dsp;
            h[4] = u8::from(llbaa && !dbd);
            h[6..8].copy_from_slice(&(bd.len() as u16).to_be_bytes());
            h
        } else {
            vec![0, 0, dsp, bd.len() as u8]
        };
        out.extend_from_slice(&bd);
        out.extend_from_slice(&pages);
        if ten {
            let n = (out.len() - 2) as u16;
            out[0..2].copy_from_slice(&n.to_be_bytes());
        } else {
            out[0] = (out.len() - 1) as u8;
        }
        Ok(truncate(out, alloc))
    }

    /// MODE SELECT(6/10) (SPC-4 6.9, 6.10): only changeable bits may
    /// differ from the current values; others get INVALID FIELD IN
    /// PARAMETER LIST. Other nexuses see MODE PARAMETERS CHANGED.
    pub(crate) fn mode_select(&self, c: &Ctx) -> CmdResult {
        let d = self.disk()?;
        let cdb = c.cdb;
        let ten = cdb[0] == op::MODE_SELECT_10;
        if cdb[1] & 0x01 != 0 {
            return Err(Sense::invalid_cdb(1, Some(0)).into()); // SP: cannot save
        }
        let plen = if ten {
            usize::from(be16(cdb, 7))
        } else {
            usize::from(cdb[4])
        };
        if plen == 0 {
            return Ok(Vec::new());
        }
        let hlen = if ten { 8 } else { 4 };
        if plen < hlen || c.data.len() < plen {
            return Err(Sense::param_list_length().into());
        }
        let p = &c.data[..plen];
        let bdl = if ten {
            usize::from(be16(p, 6))
        } else {
            usize::from(p[3])
        };
        if hlen + bdl > plen {
            return Err(Sense::param_list_length().into());
        }
        let old = d.mode.lock().clone();
        let mut new = old.clone();
        apply_pages(&mut new, &p[hlen + bdl..], hlen + bdl)?;
        let changed = new != old;
        d.set_mode(new);
        if changed {
            self.unit_attention_others(Some(c.nexus), Asc::MODE_PARAMETERS_CHANGED);
        }
        Ok(Vec::new())
    }
}

/// Apply each page of a MODE SELECT parameter list; `base` is the offset
/// of `pages` in the list, for field pointers.
fn apply_pages(mode: &mut ModeState, pages: &[u8], base: usize) -> Result<(), Sense> {
    let mut at = 0;
    while at < pages.len() {
        if pages.len() - at < 2 {
            return Err(Sense::param_list_length());
        }
        let code = pages[at] & 0x3f;
        if pages[at] & 0x40 != 0 {
            return Err(Sense::invalid_param((base + at) as u16, Some(6)));
        }
        let i = PAGES
            .iter()
            .position(|p| p.code == code)
            .ok_or_else(|| Sense::invalid_param((base + at) as u16, Some(5)))?;
        let def = PAGES[i];
        let len = usize::from(pages[at + 1]) + 2;
        if len != def.default.len() {
            return Err(Sense::invalid_param((base + at + 1) as u16, None));
        }
        if at + len > pages.len() {
            return Err(Sense::param_list_length());
        }
        let page = &pages[at..at + len];
        let cur = &mut mode.current[i];
        for j in 2..len {
            let mask = def.changeable[j];
            if (page[j] ^ cur[j]) & !mask != 0 {
                return Err(Sense::invalid_param((base + at + j) as u16, None));
            }
            cur[j] = (cur[j] & !mask) | (page[j] & mask);
        }
        at += len;
    }
    Ok(())
}
