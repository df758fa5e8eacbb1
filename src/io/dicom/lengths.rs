//! Declared lengths checked against the file before dicom-rs reads it. dicom-rs reserves the
//! length an element declares before reading its value, so a few kilobytes that declare a
//! 4 GiB element make it allocate (and zero) 4 GiB: seconds of work, or an abort under a memory
//! limit. [`check_lengths`] walks the element headers of a Part 10 file (meta group explicit
//! little endian; the data set in its transfer syntax) and refuses any defined length longer
//! than the bytes left. Sequences, items and encapsulated pixel data are walked into, so
//! everything dicom-rs later reserves is bounded by the file's size. A deflated data set is
//! not walked (its lengths refer to the inflated stream, which dicom-rs bounds itself). Header
//! bytes this walk cannot make sense of are left for dicom-rs to report.

use std::path::Path;

use super::error::{DResult, DicomError};

const PREAMBLE: usize = 132;
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const UNDEFINED: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// Check `path`'s declared lengths (up to and including the Pixel Data element's header when
/// `header_only`).
pub fn check_lengths(path: &Path, header_only: bool) -> DResult<()> {
    let file = std::fs::File::open(path).map_err(|e| DicomError::io(path, e))?;
    // SAFETY: read-only map, dropped before returning; a file changed underneath while we
    // read it can only make this check pass or fail, not read out of bounds (the slice's
    // length is fixed at map time).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DicomError::io(path, e))?;
    check_bytes(&map, header_only).map_err(|(tag, reason)| {
        if tag == PIXEL_DATA {
            DicomError::TruncatedPixelData { path: path.to_path_buf(), detail: reason }
        } else {
            DicomError::Unreadable { path: path.to_path_buf(), reason }
        }
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Syntax {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

/// The walk on a whole file's bytes; `Err` says which element declares too much.
fn check_bytes(b: &[u8], header_only: bool) -> Result<(), ((u16, u16), String)> {
    if b.len() < PREAMBLE || &b[128..132] != b"DICM" {
        return Ok(());
    }
    // the meta group: explicit VR little endian, group 0002
    let mut pos = PREAMBLE;
    let mut transfer_syntax = String::new();
    while let Some(h) = header(b, pos, Syntax::ExplicitLe) {
        if h.tag.0 != 0x0002 {
            break;
        }
        let value_at = pos + h.header_len;
        check_fits(b, &h, value_at)?;
        if h.tag == (0x0002, 0x0010) && h.len != UNDEFINED {
            let v = &b[value_at..value_at + h.len as usize];
            transfer_syntax = String::from_utf8_lossy(v).trim_end_matches(['\0', ' ']).to_string();
        }
        pos = value_at + if h.len == UNDEFINED { 0 } else { h.len as usize };
    }
    let syntax = match transfer_syntax.as_str() {
        DEFLATED => return Ok(()),
        IMPLICIT_LE => Syntax::ImplicitLe,
        EXPLICIT_BE => Syntax::ExplicitBe,
        _ => Syntax::ExplicitLe,
    };
    // Inside encapsulated pixel data the items are fragments: their bytes are compressed
    // pixels, skipped (their lengths checked), not walked as element headers.
    let mut in_fragments = false;
    while let Some(h) = header(b, pos, syntax) {
        let value_at = pos + h.header_len;
        // A header-only read stops before the pixel data's value: its length is checked when
        // the pixels are decoded.
        if header_only && h.tag == PIXEL_DATA {
            return Ok(());
        }
        check_fits(b, &h, value_at)?;
        let skip = if h.item {
            match h.tag.1 {
                0xE0DD => {
                    in_fragments = false;
                    0
                }
                0xE000 if in_fragments => h.len as usize,
                _ => 0, // an item of a sequence (its elements follow) or an item delimiter
            }
        } else if h.len == UNDEFINED {
            in_fragments = h.tag == PIXEL_DATA;
            0
        } else if h.vr == *b"SQ" {
            0 // a defined-length sequence: its items follow
        } else {
            h.len as usize
        };
        pos = value_at + skip;
    }
    Ok(())
}

fn check_fits(b: &[u8], h: &Header, value_at: usize) -> Result<(), ((u16, u16), String)> {
    let left = b.len().saturating_sub(value_at);
    if h.len != UNDEFINED && h.len as usize > left {
        return Err((
            h.tag,
            format!(
                "element ({:04X},{:04X}) at byte {} declares {} value bytes, but only {left} are left in the file \
             (truncated or corrupt)",
                h.tag.0,
                h.tag.1,
                value_at - h.header_len,
                h.len
            ),
        ));
    }
    Ok(())
}

struct Header {
    tag: (u16, u16),
    vr: [u8; 2],
    len: u32,
    header_len: usize,
    /// An item or a delimiter (FFFE,xxxx): no VR, a 4-byte length.
    item: bool,
}

/// The element header at `pos`, or `None` at the end or where the bytes are not a header.
fn header(b: &[u8], pos: usize, syntax: Syntax) -> Option<Header> {
    let u16_at = |p: usize| -> Option<u16> {
        let s = b.get(p..p + 2)?;
        Some(if syntax == Syntax::ExplicitBe {
            u16::from_be_bytes([s[0], s[1]])
        } else {
            u16::from_le_bytes([s[0], s[1]])
        })
    };
    let u32_at = |p: usize| -> Option<u32> {
        let s = b.get(p..p + 4)?;
        let a = [s[0], s[1], s[2], s[3]];
        Some(if syntax == Syntax::ExplicitBe { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })
    };
    let tag = (u16_at(pos)?, u16_at(pos + 2)?);
    if tag.0 == 0xFFFE {
        return Some(Header { tag, vr: [0, 0], len: u32_at(pos + 4)?, header_len: 8, item: true });
    }
    if syntax == Syntax::ImplicitLe {
        return Some(Header { tag, vr: [0, 0], len: u32_at(pos + 4)?, header_len: 8, item: false });
    }
    // As dicom-rs decodes it: the VRs of PS3.5 table 7.1-2 have a 2-byte length, every other
    // VR (an unknown one included, read as UN) 2 reserved bytes and a 4-byte length.
    let vr = [*b.get(pos + 4)?, *b.get(pos + 5)?];
    const SHORT: [&[u8; 2]; 21] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL", b"SS",
        b"ST", b"TM", b"UI", b"UL", b"US",
    ];
    if SHORT.contains(&&vr) {
        Some(Header { tag, vr, len: u16_at(pos + 6)? as u32, header_len: 8, item: false })
    } else {
        Some(Header { tag, vr, len: u32_at(pos + 8)?, header_len: 12, item: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Preamble, a meta group naming `ts`, then `body`.
    fn file(ts: &str, body: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        b.extend_from_slice(b"DICM");
        let mut v = ts.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        b.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        b.extend_from_slice(&(v.len() as u16).to_le_bytes());
        b.extend_from_slice(&v);
        b.extend_from_slice(body);
        b
    }

    fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8], declared: Option<u32>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&tag.0.to_le_bytes());
        b.extend_from_slice(&tag.1.to_le_bytes());
        b.extend_from_slice(vr);
        let len = declared.unwrap_or(value.len() as u32);
        if [b"OB", b"OW", b"SQ", b"UN", b"UT"].contains(&vr) {
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&len.to_le_bytes());
        } else {
            b.extend_from_slice(&(len as u16).to_le_bytes());
        }
        b.extend_from_slice(value);
        b
    }

    #[test]
    fn lengths_within_the_file_pass_and_a_huge_one_is_named() {
        let ok = [explicit((0x0010, 0x0010), b"PN", b"Doe^J ", None), explicit(PIXEL_DATA, b"OW", &[1, 2, 3, 4], None)]
            .concat();
        assert!(check_bytes(&file("1.2.840.10008.1.2.1", &ok), false).is_ok());
        let huge = [
            explicit((0x0010, 0x0010), b"PN", b"Doe^J ", None),
            explicit(PIXEL_DATA, b"OW", &[1, 2], Some(0xFFFF_FFF0)),
        ]
        .concat();
        let (tag, e) = check_bytes(&file("1.2.840.10008.1.2.1", &huge), false).unwrap_err();
        assert!(
            tag == PIXEL_DATA && e.contains("(7FE0,0010)") && e.contains("4294967280") && e.contains("only 2"),
            "{e}"
        );
        // a header-only read leaves the pixel data to the decoder, not the elements before it
        assert!(check_bytes(&file("1.2.840.10008.1.2.1", &huge), true).is_ok());
        let name =
            [explicit((0x0010, 0x0010), b"UT", b"Doe^J ", Some(1 << 31)), explicit(PIXEL_DATA, b"OW", &[1, 2], None)]
                .concat();
        assert!(check_bytes(&file("1.2.840.10008.1.2.1", &name), true).is_err());
    }

    #[test]
    fn sequences_and_items_are_walked_into() {
        // an undefined-length sequence holding an item whose element declares too much
        let mut body = explicit((0x0008, 0x1140), b"SQ", &[], Some(UNDEFINED));
        let inner = explicit((0x0008, 0x1150), b"UT", b"ab", Some(1 << 30));
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        body.extend_from_slice(&UNDEFINED.to_le_bytes());
        body.extend_from_slice(&inner);
        let (_, e) = check_bytes(&file("1.2.840.10008.1.2.1", &body), false).unwrap_err();
        assert!(e.contains("(0008,1150)"), "{e}");
        // implicit VR little endian: the same element, 4-byte length
        let mut imp = Vec::new();
        imp.extend_from_slice(&[0x10, 0x00, 0x10, 0x00]);
        imp.extend_from_slice(&(1u32 << 31).to_le_bytes());
        imp.extend_from_slice(b"Doe^J ");
        assert!(check_bytes(&file(IMPLICIT_LE, &imp), false).is_err());
        // deflated data sets are left to the inflater
        assert!(check_bytes(&file(DEFLATED, &imp), false).is_ok());
        // not DICOM at all: nothing to say
        assert!(check_bytes(b"hello", false).is_ok());
    }
}
