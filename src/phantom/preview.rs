//! PNG montages of a volume's slices (with the mask outlined in red) for looking at cases.
//! Display follows the radiological convention: patient's right on the viewer's left
//! (axis 0 runs left to right on screen), anterior at the top.

use super::manifest::write_atomic;
use crate::error::{Error, Result};
use crate::volume::Volume;
use std::path::Path;

/// An RGB image.
pub struct Rgb {
    pub w: usize,
    pub h: usize,
    pub px: Vec<u8>,
}

/// Window from the 1st to the 99.5th percentile of the volume.
fn window(v: &Volume) -> (f32, f32) {
    let mut s: Vec<f32> = v.data.iter().step_by(7).copied().collect();
    if s.is_empty() {
        return (0.0, 1.0);
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let lo = s[(s.len() as f64 * 0.01) as usize];
    let hi = s[((s.len() as f64 * 0.995) as usize).min(s.len() - 1)];
    (lo, if hi > lo { hi } else { lo + 1.0 })
}

/// Tiles `slices` of `v` in `cols` columns, each shrunk by `down` (box average); mask voxels on
/// the mask's border are drawn red.
pub fn montage(v: &Volume, mask: Option<&[u8]>, slices: &[usize], cols: usize, down: usize) -> Rgb {
    let [n0, n1, n2] = v.dims;
    let down = down.max(1);
    let (tw, th) = (n0 / down, n1 / down);
    let cols = cols.max(1).min(slices.len().max(1));
    let rows = slices.len().div_ceil(cols);
    let (w, h) = (cols * tw + (cols - 1) * 2, rows * th + rows.saturating_sub(1) * 2);
    let mut px = vec![40u8; w * h * 3];
    let (lo, hi) = window(v);
    let m = |i: usize, j: usize, k: usize| mask.map(|m| m[(i * n1 + j) * n2 + k] > 0).unwrap_or(false);
    for (t, &k) in slices.iter().enumerate() {
        let (ox, oy) = ((t % cols) * (tw + 2), (t / cols) * (th + 2));
        for y in 0..th {
            for x in 0..tw {
                let mut acc = 0.0;
                let mut edge = false;
                for a in 0..down {
                    for b in 0..down {
                        let (i, j) = (x * down + a, y * down + b);
                        acc += v.get(i, j, k);
                        if m(i, j, k) {
                            let border = i == 0
                                || j == 0
                                || i + 1 == n0
                                || j + 1 == n1
                                || !m(i - 1, j, k)
                                || !m(i + 1, j, k)
                                || !m(i, j - 1, k)
                                || !m(i, j + 1, k);
                            edge |= border;
                        }
                    }
                }
                let g = ((acc / (down * down) as f32 - lo) / (hi - lo) * 255.0).clamp(0.0, 255.0) as u8;
                let o = ((oy + y) * w + ox + x) * 3;
                if edge {
                    px[o..o + 3].copy_from_slice(&[255, 30, 30]);
                } else {
                    px[o..o + 3].copy_from_slice(&[g, g, g]);
                }
            }
        }
    }
    Rgb { w, h, px }
}

/// `n` slices spread evenly over the volume.
pub fn even_slices(n2: usize, n: usize) -> Vec<usize> {
    let n = n.min(n2).max(1);
    (0..n).map(|t| ((t as f64 + 0.5) * n2 as f64 / n as f64) as usize).collect()
}

pub fn write_png(path: &Path, img: &Rgb) -> Result<()> {
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, img.w as u32, img.h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
        wr.write_image_data(&img.px).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    }
    write_atomic(path, &buf)
}
