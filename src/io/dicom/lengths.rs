//! Declared lengths checked against the file before dicom-rs reads it. dicom-rs reserves the
//! length an element declares before reading its value, so a few kilobytes that declare a
//! 4 GiB element make it allocate (and zero) 4 GiB: seconds of work, or an abort under a memory
//! limit. [`check_lengths`] walks the element headers of a Part 10 file (meta group explicit
//! little endian; the data set in its transfer syntax) and refuses any defined length longer
//! than the bytes left. Sequences, items and encapsulated pixel data are walked into, so
//! everything dicom-rs later reserves is bounded by the file's size. A deflated data set is
//! inflated first (bounded: at most [`MAX_INFLATED`] bytes, and no more than deflate can
//! expand the bytes present to) and the inflated stream walked, since dicom-rs reserves what
//! the inflated headers declare too. Header bytes this walk cannot make sense of are left for
//! dicom-rs to report.

use std::path::Path;

use crate::error::dicom::{DResult, DicomError};

const PREAMBLE: usize = 132;
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
const RLE: &str = "1.2.840.10008.1.2.5";
/// An RLE frame's header: a segment count (at most 15, PS3.5 G.5) and 15 offsets.
const RLE_HEADER: usize = 64;
/// The item tag of a pixel data fragment (an RLE header error is "unreadable", not "truncated").
const FRAGMENT: (u16, u16) = (0xFFFE, 0xE000);
const UNDEFINED: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);
/// The most a deflated data set may inflate to (a 2^28-voxel 16-bit volume is 512 MiB).
const MAX_INFLATED: u64 = 1 << 30;
/// Deflate's greatest expansion (a run of one byte): about 1032 output bytes per input byte.
const DEFLATE_MAX_RATIO: u64 = 1032;

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
    // The meta group as dicom-rs reads it (dicom-object's FileMetaTable): explicit VR little
    // endian, (0002,0000) first, then elements of any group until the group length is used
    // up; the data set starts after the last of them. Without that group length dicom-rs
    // refuses the file itself.
    let Some(first) = header(b, PREAMBLE, Syntax::ExplicitLe) else { return Ok(()) };
    let first_value = PREAMBLE + first.header_len;
    if first.tag != (0x0002, 0x0000) || first.len != 4 || b.len() < first_value + 4 {
        return Ok(());
    }
    let group_length = u32::from_le_bytes([b[first_value], b[first_value + 1], b[first_value + 2], b[first_value + 3]]);
    let meta_start = first_value + 4;
    let mut pos = meta_start;
    let mut transfer_syntax = String::new();
    while ((pos - meta_start) as u64) < group_length as u64 {
        let Some(h) = header(b, pos, Syntax::ExplicitLe) else { return Ok(()) };
        if h.len == UNDEFINED {
            return Ok(()); // dicom-rs: an undefined length in the meta group is an error
        }
        let value_at = pos + h.header_len;
        check_fits(b, &h, value_at)?;
        if h.tag == (0x0002, 0x0010) {
            let v = &b[value_at..value_at + h.len as usize];
            // as dicom-rs reads it: any trailing whitespace or NUL dropped
            transfer_syntax =
                String::from_utf8_lossy(v).trim_end_matches(|c: char| c.is_whitespace() || c == '\0').to_string();
        }
        pos = value_at + h.len as usize;
    }
    let syntax = match transfer_syntax.as_str() {
        DEFLATED => {
            let inflated = inflate_bounded(&b[pos.min(b.len())..], MAX_INFLATED)?;
            return walk_data_set(&inflated, 0, Syntax::ExplicitLe, header_only, false);
        }
        IMPLICIT_LE => Syntax::ImplicitLe,
        EXPLICIT_BE => Syntax::ExplicitBe,
        _ => Syntax::ExplicitLe,
    };
    walk_data_set(b, pos, syntax, header_only, transfer_syntax == RLE)
}

/// The raw deflate stream `z` inflated, refused when it would exceed `max` bytes or what its
/// own size can honestly expand to, or when it is corrupt.
fn inflate_bounded(z: &[u8], max: u64) -> Result<Vec<u8>, ((u16, u16), String)> {
    use std::io::Read;
    let limit = (z.len() as u64).saturating_mul(DEFLATE_MAX_RATIO).min(max);
    let mut out = Vec::new();
    let whole = (0xFFFF, 0xFFFF);
    flate2::read::DeflateDecoder::new(z)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| (whole, format!("the deflated data set is corrupt: {e}")))?;
    if out.len() as u64 > limit {
        return Err((whole, format!("the deflated data set inflates to more than {limit} bytes")));
    }
    Ok(out)
}

/// The element walk of a data set in `syntax`, from `pos` to the end of `b`, in step with
/// dicom-rs' data set reader (dicom-parser's `DataSetReader`): at data set level every header
/// is an element (an item delimiter ends the open item; a sequence, or any other element of
/// undefined length, opens a sequence; anything else, group FFFE included, has a value to
/// skip); inside a sequence only item headers are expected; defined-length sequences and
/// items end where their length says. Where dicom-rs would stop with an error, the walk stops
/// too (dicom-rs reports it without reserving anything).
/// With `rle`, every pixel data fragment after the offset table is an RLE frame whose header
/// is checked too: dicom-rs reserves the segment count it declares before reading any.
fn walk_data_set(
    b: &[u8],
    mut pos: usize,
    syntax: Syntax,
    header_only: bool,
    rle: bool,
) -> Result<(), ((u16, u16), String)> {
    #[derive(PartialEq)]
    enum Open {
        Sequence,
        Item,
    }
    // The open sequences and items, with the byte where a defined-length one ends.
    let mut open: Vec<(Open, Option<usize>)> = Vec::new();
    // Inside encapsulated pixel data the items are fragments: their bytes are compressed
    // pixels, skipped (their lengths checked), not walked as element headers.
    let mut in_fragments = false;
    let mut fragment = 0usize;
    // Rows, Columns, SamplesPerPixel of the top-level data set, as they pass: a JPEG frame's
    // own size must not exceed them (the JPEG decoder reserves what its SOF declares).
    let mut image = [0u64; 3];
    let end_of = |value_at: usize, len: u32| (len != UNDEFINED).then(|| value_at.saturating_add(len as usize));
    loop {
        while let Some(&(_, Some(end))) = open.last() {
            if pos < end {
                break;
            }
            open.pop();
        }
        let Some(h) = header(b, pos, syntax) else { return Ok(()) };
        let value_at = pos + h.header_len;
        if in_fragments {
            match (h.item, h.tag.1) {
                (true, 0xE000) => {
                    if h.len == UNDEFINED {
                        // PS3.5 A.4: fragments have defined lengths
                        return Err((
                            FRAGMENT,
                            format!("pixel data fragment {fragment} has an undefined length: corrupt pixel data"),
                        ));
                    }
                    check_fits(b, &h, value_at)?;
                    let f = &b[value_at..value_at + h.len as usize];
                    if rle && fragment > 0 {
                        check_rle_frame(f, fragment)?;
                    }
                    if fragment > 0 {
                        check_jpeg_frame(f, fragment, image)?;
                    }
                    fragment += 1;
                    pos = value_at + h.len as usize;
                }
                (true, 0xE0DD) => {
                    in_fragments = false;
                    pos = value_at;
                }
                _ => return Ok(()),
            }
            continue;
        }
        if open.last().is_some_and(|(o, _)| *o == Open::Sequence) {
            if !h.item {
                return Ok(()); // dicom-rs: an unexpected tag where an item was due
            }
            match h.tag.1 {
                0xE000 => {
                    check_fits(b, &h, value_at)?;
                    open.push((Open::Item, end_of(value_at, h.len)));
                }
                0xE0DD => {
                    open.pop();
                }
                0xE00D => {}
                _ => return Ok(()),
            }
            pos = value_at;
            continue;
        }
        // A header-only read stops before the pixel data's value: its length is checked when
        // the pixels are decoded. Only the top-level one: dicom-rs reads a (7FE0,0010) nested
        // in a sequence item as any other element.
        if header_only && h.tag == PIXEL_DATA && open.is_empty() {
            return Ok(());
        }
        check_fits(b, &h, value_at)?;
        if h.tag == (0xFFFE, 0xE00D) {
            if open.last().is_some_and(|(o, _)| *o == Open::Item) {
                open.pop();
            }
            pos = value_at;
        } else if h.tag == PIXEL_DATA && h.len == UNDEFINED {
            in_fragments = true;
            pos = value_at;
        } else if h.vr == *b"SQ" || h.len == UNDEFINED {
            open.push((Open::Sequence, end_of(value_at, h.len)));
            pos = value_at;
        } else {
            if open.is_empty() && h.len == 2 {
                let slot = match h.tag {
                    (0x0028, 0x0010) => Some(0),
                    (0x0028, 0x0011) => Some(1),
                    (0x0028, 0x0002) => Some(2),
                    _ => None,
                };
                if let Some(i) = slot {
                    let v = [b[value_at], b[value_at + 1]];
                    image[i] =
                        if syntax == Syntax::ExplicitBe { u16::from_be_bytes(v) } else { u16::from_le_bytes(v) } as u64;
                }
            }
            pos = value_at + h.len as usize;
        }
    }
}

/// A JPEG frame (ITU-T T.81: starts with SOI) whose SOF declares more samples than the data
/// set's Rows x Columns x SamplesPerPixel (or, where those are unknown, more than 2^28) is
/// refused: the JPEG decoder reserves what its SOF declares (AFL++: 8.5 GB from 2 kB).
fn check_jpeg_frame(f: &[u8], n: usize, image: [u64; 3]) -> Result<(), ((u16, u16), String)> {
    if !f.starts_with(&[0xFF, 0xD8]) {
        return Ok(());
    }
    let mut p = 2;
    while p + 4 <= f.len() && f[p] == 0xFF {
        let m = f[p + 1];
        if m == 0xFF {
            p += 1; // fill byte
            continue;
        }
        let len = u16::from_be_bytes([f[p + 2], f[p + 3]]) as usize;
        let sof = (0xC0..=0xCF).contains(&m) && ![0xC4, 0xC8, 0xCC].contains(&m);
        if sof && p + 10 <= f.len() {
            let (y, x) =
                (u16::from_be_bytes([f[p + 5], f[p + 6]]) as u64, u16::from_be_bytes([f[p + 7], f[p + 8]]) as u64);
            let comps = f[p + 9] as u64;
            let declared = y * x * comps.max(1);
            let allowed = if image.iter().all(|&v| v > 0) { image[0] * image[1] * image[2] } else { 1 << 28 };
            if declared > allowed {
                return Err((
                    FRAGMENT,
                    format!(
                        "JPEG frame {n} declares {x} x {y} with {comps} component(s), more than the image's \
                         {} x {} x {} samples: corrupt pixel data",
                        image[1], image[0], image[2]
                    ),
                ));
            }
            return Ok(());
        }
        if m == 0xDA {
            return Ok(()); // start of scan: no SOF before it
        }
        p += 2 + len;
    }
    Ok(())
}

/// An RLE frame (fragment `n` of the pixel data): a whole header, at most 15 segments.
fn check_rle_frame(f: &[u8], n: usize) -> Result<(), ((u16, u16), String)> {
    let segments = f.get(..4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    match segments {
        Some(k) if f.len() >= RLE_HEADER && k <= 15 => Ok(()),
        Some(k) if f.len() >= RLE_HEADER => {
            Err((FRAGMENT, format!("RLE frame {n} declares {k} segments (at most 15 exist): corrupt pixel data")))
        }
        _ => Err((
            FRAGMENT,
            format!(
                "RLE frame {n} is {} bytes, shorter than its {RLE_HEADER}-byte header: corrupt pixel data",
                f.len()
            ),
        )),
    }
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
    // dicom-rs reads a binary VR's value as whole values and skips no remainder, so a length
    // that is not a multiple of the value size (AT of 2 bytes) leaves it reading the next
    // header from the middle of this value: refuse it here, where the walk is still aligned.
    let unit = match &h.vr {
        b"US" | b"SS" | b"OW" => 2,
        b"AT" | b"UL" | b"SL" | b"FL" | b"OF" | b"OL" => 4,
        b"FD" | b"OD" | b"SV" | b"UV" | b"OV" => 8,
        _ => 1,
    };
    if h.len != UNDEFINED && h.len % unit != 0 {
        return Err((
            h.tag,
            format!(
                "element ({:04X},{:04X}) at byte {} is {} with a length of {} bytes, not a whole number of its \
                 {unit}-byte values (corrupt)",
                h.tag.0,
                h.tag.1,
                value_at - h.header_len,
                String::from_utf8_lossy(&h.vr),
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
        // dicom-rs takes an implicit element's VR from the dictionary: a sequence is walked
        // into, and a binary value is read as whole values (the length checks need the VR).
        use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
        let vr = dicom_dictionary_std::StandardDataDictionary
            .by_tag(dicom_core::Tag(tag.0, tag.1))
            .map_or([0, 0], |e| e.vr().relaxed().to_bytes());
        return Some(Header { tag, vr, len: u32_at(pos + 4)?, header_len: 8, item: false });
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
        b.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        b.extend_from_slice(&(8 + v.len() as u32).to_le_bytes());
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
        let ok = [explicit((0x0010, 0x0010), b"PN", b"Doe^J ", None), explicit(PIXEL_DATA, b"OW", &[1, 2, 3, 4], None)]
            .concat();
        let name =
            [explicit((0x0010, 0x0010), b"UT", b"Doe^J ", Some(1 << 31)), explicit(PIXEL_DATA, b"OW", &[1, 2], None)]
                .concat();
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
        // deflated data sets are inflated and walked: a 2 GiB element inside is named, a
        // sound one passes, corrupt or over-expanding streams are refused
        let deflate = |b: &[u8]| {
            use std::io::Write;
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(b).unwrap();
            z.finish().unwrap()
        };
        let (_, e) = check_bytes(&file(DEFLATED, &deflate(&name)), true).unwrap_err();
        assert!(e.contains("(0010,0010)") && e.contains("2147483648"), "{e}");
        assert!(check_bytes(&file(DEFLATED, &deflate(&ok)), false).is_ok());
        let (_, e) = check_bytes(&file(DEFLATED, b"\xff\xff\xff\xff"), false).unwrap_err();
        assert!(e.contains("deflated data set is corrupt"), "{e}");
        let (_, e) = inflate_bounded(&deflate(&vec![0u8; 1 << 20]), 1 << 19).unwrap_err();
        assert!(e.contains("inflates to more than 524288 bytes"), "{e}");
        assert_eq!(inflate_bounded(&deflate(&vec![7u8; 1 << 19]), 1 << 19).unwrap(), vec![7u8; 1 << 19]);
        // as dicom-rs reads it: a group-FFFE element outside a sequence has a value to skip
        // (here bytes that would read as a 4-byte-length header), and the next element is checked
        let mut stray = vec![0xFE, 0xFF, 0x0D, 0xDF, 6, 0, 0, 0];
        stray.extend_from_slice(b"\x10\x00\x11\x00OB");
        stray.extend_from_slice(&explicit((0x0010, 0x0010), b"UT", b"ab", Some(1 << 30)));
        let (tag, e) = check_bytes(&file("1.2.840.10008.1.2.1", &stray), true).unwrap_err();
        assert!(tag == (0x0010, 0x0010), "{e}");
        // implicit VR: a defined-length sequence (known from the dictionary) is walked into
        let mut sq = vec![0x08, 0x00, 0x40, 0x11];
        sq.extend_from_slice(&26u32.to_le_bytes());
        sq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        sq.extend_from_slice(&18u32.to_le_bytes());
        sq.extend_from_slice(&[0x08, 0x00, 0x50, 0x11]);
        sq.extend_from_slice(&(1u32 << 30).to_le_bytes());
        sq.extend_from_slice(b"1.2.3.4.5.6");
        let (tag, e) = check_bytes(&file(IMPLICIT_LE, &sq), true).unwrap_err();
        assert!(tag == (0x0008, 0x1150), "{e}");
        // a binary VR whose length is not a whole number of values (dicom-rs would misalign)
        let at = [explicit((0x0018, 0x0021), b"AT", b"SK", None), explicit(PIXEL_DATA, b"OW", &[1, 2], None)].concat();
        let (tag, e) = check_bytes(&file("1.2.840.10008.1.2.1", &at), true).unwrap_err();
        assert!(tag == (0x0018, 0x0021) && e.contains("AT with a length of 2 bytes"), "{e}");
        // the data set starts where the meta group's length says, as dicom-rs reads it: an
        // off-group element inside the meta group is meta, not the start of the data set
        let mut off = file(DEFLATED, &[]);
        let glen = u32::from_le_bytes(off[140..144].try_into().unwrap());
        off[140..144].copy_from_slice(&(glen + 10).to_le_bytes());
        off.extend_from_slice(&explicit((0x0003, 0x0012), b"SH", b"xx", None));
        off.extend_from_slice(&deflate(&name));
        let (tag, e) = check_bytes(&off, true).unwrap_err();
        assert!(tag == (0x0010, 0x0010), "{e}");
        // an RLE frame header declaring more than 15 segments (dicom-rs reserves them)
        assert!(check_rle_frame(&[2, 0, 0, 0].repeat(16), 1).is_ok());
        let (_, e) = check_rle_frame(&[0xff; 64], 1).unwrap_err();
        assert!(e.contains("declares 4294967295 segments"), "{e}");
        assert!(check_rle_frame(&[1, 0, 0, 0], 2).unwrap_err().1.contains("shorter than its 64-byte header"));
        // a JPEG frame whose SOF is larger than the image (the decoder reserves it)
        let sof = |y: u16, x: u16| {
            [&[0xFF, 0xD8, 0xFF, 0xC3, 0, 11, 16][..], &y.to_be_bytes(), &x.to_be_bytes(), &[1]].concat()
        };
        assert!(check_jpeg_frame(&sof(10, 12), 1, [10, 12, 1]).is_ok());
        let (_, e) = check_jpeg_frame(&sof(65535, 65535), 1, [10, 12, 1]).unwrap_err();
        assert!(e.contains("declares 65535 x 65535 with 1 component(s), more than the image's 12 x 10 x 1"), "{e}");
        // not DICOM at all: nothing to say
        assert!(check_bytes(b"hello", false).is_ok());
    }
}
