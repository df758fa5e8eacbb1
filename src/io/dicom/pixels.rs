//! Pixel data to real values: decode (dicom-pixeldata: native little/big endian, deflate, RLE,
//! JPEG baseline/lossless, JPEG-LS, JPEG 2000), take BitsStored bits at HighBit, sign-extend
//! when PixelRepresentation is 1, then apply RescaleSlope/Intercept (per frame for Enhanced MR).

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_object::{open_file, DefaultDicomObject};
use dicom_pixeldata::PixelDecoder;

use super::guard::contain;
use super::header::{FileHeader, Rescale};
use super::scan::error_chain;
use crate::error::dicom::{DResult, DicomError};

/// Refuse what fmseg cannot turn into one real value per voxel, before decoding anything.
pub fn check_pixel_format(h: &FileHeader) -> DResult<()> {
    let bad = |msg: String| Err(DicomError::UnsupportedPixels { path: h.path.clone(), msg });
    if h.samples_per_pixel != 1 {
        return bad(format!(
            "SamplesPerPixel {} (colour); only greyscale (1 sample) is supported",
            h.samples_per_pixel
        ));
    }
    if h.photometric != "MONOCHROME2" {
        return bad(format!(
            "PhotometricInterpretation {:?}; only MONOCHROME2 greyscale is supported{}",
            h.photometric,
            if h.photometric == "MONOCHROME1" {
                " (MONOCHROME1 is inverted greyscale)"
            } else {
                " (colour or palette)"
            }
        ));
    }
    if h.bits_allocated != 8 && h.bits_allocated != 16 {
        return bad(format!("BitsAllocated {}; 8 and 16 are supported", h.bits_allocated));
    }
    if h.bits_stored == 0
        || h.bits_stored > h.bits_allocated
        || h.high_bit >= h.bits_allocated
        || h.high_bit + 1 < h.bits_stored
    {
        return bad(format!(
            "BitsStored {} / HighBit {} do not fit BitsAllocated {}",
            h.bits_stored, h.high_bit, h.bits_allocated
        ));
    }
    if h.pixel_representation > 1 {
        return bad(format!("PixelRepresentation {}", h.pixel_representation));
    }
    Ok(())
}

/// Whether an error chain bottoms out in an unexpected end of file.
fn is_eof(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return true;
            }
        }
        cur = c.source();
    }
    let s = error_chain(e).to_ascii_lowercase();
    s.contains("fill whole buffer") || s.contains("end of file") || s.contains("unexpected eof")
}

/// Stored sample -> integer value (BitsStored bits at HighBit, two's complement when signed).
#[derive(Clone, Copy, Debug)]
struct SampleFormat {
    bytes: usize,
    shift: u32,
    mask: u32,
    sign_bit: u32,
    signed: bool,
}

impl SampleFormat {
    fn of(h: &FileHeader) -> Self {
        let bits = h.bits_stored as u32;
        SampleFormat {
            bytes: h.bits_allocated as usize / 8,
            shift: h.high_bit as u32 + 1 - bits,
            mask: if bits >= 32 { u32::MAX } else { (1u32 << bits) - 1 },
            sign_bit: 1u32 << (bits - 1),
            signed: h.pixel_representation == 1,
        }
    }

    #[inline]
    fn value(&self, raw: u32) -> i64 {
        let v = (raw >> self.shift) & self.mask;
        if self.signed && v & self.sign_bit != 0 {
            v as i64 - ((self.mask as i64) + 1)
        } else {
            v as i64
        }
    }
}

fn convert(bytes: &[u8], fmt: SampleFormat, rescale: Rescale, out: &mut Vec<f32>) {
    let apply = |v: i64| (v as f64 * rescale.slope + rescale.intercept) as f32;
    match fmt.bytes {
        1 => out.extend(bytes.iter().map(|&b| apply(fmt.value(b as u32)))),
        _ => out.extend(bytes.chunks_exact(2).map(|c| apply(fmt.value(u16::from_le_bytes([c[0], c[1]]) as u32)))),
    }
}

/// Transfer syntaxes whose pixel data is stored as is (implicit/explicit little endian, big
/// endian, deflated: the deflate wraps the data set, not the pixels).
fn is_native(transfer_syntax: &str) -> bool {
    matches!(
        transfer_syntax.trim_end_matches(['\0', ' ']),
        "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.2" | "1.2.840.10008.1.2.1.99"
    )
}

/// How a decode failed, as the worker thread reports it.
enum Failure {
    /// The codec panicked.
    Corrupt,
    /// The data ends early.
    Eof(String),
    /// The codec reported an error.
    Codec(String),
}

/// How long a codec may work on `pixels` pixels before the stream is called hostile: 2 s plus
/// 1 us per pixel (a 448 x 448 x 200 Enhanced MR object: 42 s; JPEG 2000, the slowest codec,
/// decodes such an object in a few seconds here).
fn decode_deadline(pixels: usize) -> Duration {
    Duration::from_secs(2) + Duration::from_micros(pixels as u64)
}

/// The object's pixel data, decoded to bytes. Native data is decoded here. Compressed data is
/// decoded in a worker thread with a deadline ([`decode_deadline`]): a crafted stream can keep
/// a codec busy for seconds on a tiny frame (AFL++ found a 12 x 10 JPEG-LS frame that CharLS
/// works on for 4-7 s before calling it invalid), and no codec can be interrupted, so the read
/// gives up on the file, says so, and leaves the worker to finish on its own (it holds nothing
/// but this file's object).
fn decode_pixels(obj: DefaultDicomObject, h: &FileHeader) -> DResult<Vec<u8>> {
    let run = move || -> Result<Vec<u8>, Failure> {
        let decoded = contain(|| obj.decode_pixel_data().map(|d| d.data().to_vec())).map_err(|panic| {
            // The panic text is the codec's internals ("index out of bounds: the len is 3 but
            // the index is 40"): logged for developers, not shown to the user.
            log::debug!("decoder panic: {panic}");
            Failure::Corrupt
        })?;
        decoded.map_err(|e| if is_eof(&e) { Failure::Eof(error_chain(&e)) } else { Failure::Codec(error_chain(&e)) })
    };
    let path = &h.path;
    let decode_error =
        |reason: String| DicomError::Decode { path: path.clone(), transfer_syntax: h.transfer_syntax.clone(), reason };
    let r = if is_native(&h.transfer_syntax) {
        run()
    } else {
        let pixels = h.rows as usize * h.cols as usize * h.number_of_frames as usize;
        let limit = decode_deadline(pixels);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("fmseg-decode".into())
            .spawn(move || {
                // The receiver is gone when the deadline has passed: nothing to report then.
                let _ = tx.send(run());
            })
            .map_err(|e| DicomError::io(path, e))?;
        match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(decode_error(format!(
                    "the decoder was still working after {:.1} s on {pixels} pixel(s): the compressed stream is \
                     corrupt or crafted (given up)",
                    limit.as_secs_f64()
                )))
            }
            // Only if the worker died outside `contain`, which catches every panic.
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(Failure::Corrupt),
        }
    };
    r.map_err(|f| match f {
        Failure::Corrupt => {
            decode_error("the compressed pixel data is corrupt (the decoder could not make sense of it)".to_string())
        }
        Failure::Eof(detail) => DicomError::TruncatedPixelData { path: path.clone(), detail },
        Failure::Codec(reason) => decode_error(reason),
    })
}

/// Decode every frame of one file into real values, frame by frame, each row-major
/// (`row * cols + col`).
pub fn decode_frames(h: &FileHeader) -> DResult<Vec<Vec<f32>>> {
    check_pixel_format(h)?;
    let path: &Path = &h.path;
    super::lengths::check_lengths(path, false)?;
    let obj = contain(|| open_file(path))
        .map_err(|panic| DicomError::Unreadable {
            path: path.to_path_buf(),
            reason: format!("parser failed: {panic}"),
        })?
        .map_err(|e| {
            if is_eof(&e) {
                DicomError::TruncatedPixelData {
                    path: path.to_path_buf(),
                    detail: format!(
                        "the file ends before the data it declares (truncated or corrupt): {}",
                        error_chain(&e)
                    ),
                }
            } else {
                DicomError::Unreadable { path: path.to_path_buf(), reason: error_chain(&e) }
            }
        })?;
    match obj.element_opt(tags::PIXEL_DATA) {
        Ok(Some(_)) => {}
        _ => return Err(DicomError::NoPixelData { path: path.to_path_buf() }),
    }
    let data = decode_pixels(obj, h)?;
    let fmt = SampleFormat::of(h);
    let frame_bytes = h.rows as usize * h.cols as usize * fmt.bytes;
    let frames = h.number_of_frames as usize;
    if data.len() < frame_bytes * frames {
        return Err(DicomError::TruncatedPixelData {
            path: path.to_path_buf(),
            detail: format!(
                "{} byte(s) of pixel data for {frames} frame(s) of {} x {} x {} byte(s) = {} byte(s)",
                data.len(),
                h.rows,
                h.cols,
                fmt.bytes,
                frame_bytes * frames
            ),
        });
    }
    // Uncompressed pixel data holds exactly what the header declares (plus one pad byte when odd):
    // more means the header does not describe it (BitsAllocated 8 on 16-bit samples, a wrong
    // Rows/Columns), and reading it would segment garbage.
    if is_native(&h.transfer_syntax) && data.len() > frame_bytes * frames + 1 {
        return Err(DicomError::UnsupportedPixels {
            path: path.to_path_buf(),
            msg: format!(
                "{} byte(s) of pixel data, but Rows {} x Columns {} x {frames} frame(s) x BitsAllocated {} \
                 declare {} byte(s): the header does not describe the pixel data",
                data.len(),
                h.rows,
                h.cols,
                h.bits_allocated,
                frame_bytes * frames
            ),
        });
    }
    if h.frames.len() != frames {
        return Err(DicomError::malformed(path, format!("{} frame header(s) for {frames} frame(s)", h.frames.len())));
    }
    Ok(h.frames
        .iter()
        .enumerate()
        .map(|(f, fh)| {
            let mut out = Vec::with_capacity(h.rows as usize * h.cols as usize);
            convert(&data[f * frame_bytes..(f + 1) * frame_bytes], fmt, fh.rescale, &mut out);
            out
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(bits_allocated: u16, bits_stored: u16, high_bit: u16, signed: bool) -> SampleFormat {
        SampleFormat {
            bytes: bits_allocated as usize / 8,
            shift: (high_bit + 1 - bits_stored) as u32,
            mask: (1u32 << bits_stored) - 1,
            sign_bit: 1u32 << (bits_stored - 1),
            signed,
        }
    }

    #[test]
    fn samples() {
        let f = fmt(16, 16, 15, true);
        assert_eq!(f.value(0xFFFF), -1);
        assert_eq!(f.value(0x8000), -32768);
        assert_eq!(f.value(0x7FFF), 32767);
        let f = fmt(16, 12, 11, true);
        assert_eq!(f.value(0x0800), -2048);
        assert_eq!(f.value(0xF7FF), 2047); // bits above BitsStored are ignored
        let f = fmt(16, 12, 11, false);
        assert_eq!(f.value(0x0FFF), 4095);
        let f = fmt(16, 12, 15, false); // stored in the high bits
        assert_eq!(f.value(0xFFF0), 4095);
        let f = fmt(8, 8, 7, false);
        assert_eq!(f.value(200), 200);
        let mut out = Vec::new();
        convert(&[0xFE, 0xFF, 0x02, 0x00], fmt(16, 16, 15, true), Rescale { slope: 0.5, intercept: 10.0 }, &mut out);
        assert_eq!(out, vec![9.0, 11.0]);
    }
}
