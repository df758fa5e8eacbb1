//! `overlay.png`: a montage of slices of the input image with the fat-metaplasia outline drawn
//! on them, for a quick look at what the mask covers (ITK-SNAP or a viewer with the mask
//! NIfTI is the place for a close look).
//!
//! - Slices: those holding any FM, else all; at most [`MAX_TILES`], evenly spaced among them.
//!   Slices are along the input's third voxel axis ([`crate::pipeline::report::SLICE_AXIS`]).
//! - Orientation: each tile is shown as a radiologist reads it, whatever the file's voxel
//!   order. Axial: patient's right on the image's left, anterior at the top; coronal: right on
//!   the left, superior at the top; sagittal: anterior on the left, superior at the top. The
//!   plane is the one closest to the slices' normal; each in-plane voxel axis goes to the
//!   screen axis it runs closest to, flipped where needed ([`View`]).
//! - Pixels are square in millimetres (anisotropic in-plane spacing is resampled), and a tile
//!   is at most [`MAX_TILE_PX`] pixels across: each screen pixel shows the mean of the image
//!   voxels it covers, and is FM if any voxel it covers is.
//! - Grey levels: the image's 1st to 99th percentile (over the whole volume) mapped to 0-255.
//! - Outline: FM screen pixels with a 4-neighbour outside the mask (or at the tile's edge),
//!   drawn in [`OUTLINE_RGB`]; no caption or legend.
//! - Against a ground truth ([`render_compared`], `segment --truth`): no outline; each screen
//!   pixel is tinted by what it covers: FM found (predicted and true) [`FOUND_RGB`], missed
//!   (true, not predicted) [`MISSED_RGB`], false (predicted, not true) [`FALSE_RGB`], and the
//!   slices shown are those holding either.
//! - Grad-CAM ([`render_heat`], `gradcam.png` of `fmseg classify`): each screen pixel blended
//!   with a blue-to-red ramp by the largest map value it covers (0 shows the image alone), with
//!   the FM outline on top; every slice of the classifier's 16-slice crop is shown.

use std::path::Path;

use crate::error::{Error, Result};
use crate::pipeline::report::{percentile, SLICE_AXIS};
use crate::volume::Volume;

/// Colour of the mask outline.
pub const OUTLINE_RGB: [u8; 3] = [255, 48, 32];
/// Tints against a ground truth: found (green), missed (yellow), false (red); half opacity.
pub const FOUND_RGB: [u8; 3] = [40, 220, 60];
pub const MISSED_RGB: [u8; 3] = [255, 210, 0];
pub const FALSE_RGB: [u8; 3] = [255, 40, 40];
/// Colour between tiles.
pub const GAP_RGB: [u8; 3] = [48, 48, 64];
/// Pixels between tiles and around the montage.
pub const GAP: usize = 4;
pub const MAX_TILES: usize = 24;
pub const MAX_TILE_PX: usize = 384;

/// How one slice is laid out on screen: voxel axis `h_axis` runs left to right (reversed
/// when `h_flip`), `v_axis` top to bottom (reversed when `v_flip`), in a tile of `w x h`
/// pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub h_axis: usize,
    pub h_flip: bool,
    pub v_axis: usize,
    pub v_flip: bool,
    pub w: usize,
    pub h: usize,
}

impl View {
    /// The radiological view of slices along the third voxel axis of `image` (module docs).
    pub fn of(image: &Volume) -> View {
        let a = &image.affine;
        let s = image.spacing();
        let dir = |c: usize| [0, 1, 2].map(|r| a[r][c] / s[c].max(f64::MIN_POSITIVE));
        let (d0, d1) = (dir(0), dir(1));
        let n = [d0[1] * d1[2] - d0[2] * d1[1], d0[2] * d1[0] - d0[0] * d1[2], d0[0] * d1[1] - d0[1] * d1[0]];
        let plane = (0..3).max_by(|&x, &y| n[x].abs().total_cmp(&n[y].abs())).unwrap_or(2);
        // (world axis to the right, world axis downwards, sign of "down" along it)
        let (hw, vw, down) = match plane {
            2 => (0, 1, 1.0),  // axial: +x (patient left) right, +y (posterior) down
            1 => (0, 2, -1.0), // coronal: +x right, superior up
            _ => (1, 2, -1.0), // sagittal: +y (posterior) right, superior up
        };
        let (h_axis, v_axis) = if d1[hw].abs() > d0[hw].abs() { (1, 0) } else { (0, 1) };
        let (dh, dv) = if h_axis == 0 { (d0, d1) } else { (d1, d0) };
        let d = image.dims;
        let (nh, nv, sh, sv) = (d[h_axis], d[v_axis], s[h_axis], s[v_axis]);
        let px = sh.min(sv).max(((nh as f64 * sh).max(nv as f64 * sv)) / MAX_TILE_PX as f64);
        let size = |n: usize, s: f64| ((n as f64 * s / px).round() as usize).clamp(1, MAX_TILE_PX);
        View { h_axis, h_flip: dh[hw] < 0.0, v_axis, v_flip: down * dv[vw] < 0.0, w: size(nh, sh), h: size(nv, sv) }
    }

    /// Voxel index range `[a, b)` along an in-plane axis of `n` voxels covered by screen
    /// pixel `u` of `m`, before any flip.
    fn span(u: usize, m: usize, n: usize) -> (usize, usize) {
        let a = (u * n / m).min(n - 1);
        let b = ((u + 1) * n / m).clamp(a + 1, n);
        (a, b)
    }
}

/// A drawn montage.
#[derive(Clone, Debug, PartialEq)]
pub struct Overlay {
    pub width: usize,
    pub height: usize,
    /// Row-major RGB, 3 bytes per pixel.
    pub rgb: Vec<u8>,
    /// Slices shown, in tile order (left to right, then top to bottom).
    pub slices: Vec<usize>,
    pub view: View,
    /// Top-left corner of each tile, in tile order.
    pub tiles: Vec<(usize, usize)>,
}

/// Which slices to show (module docs).
pub fn choose_slices(mask: &Volume) -> Vec<usize> {
    choose_slices_of(mask.dims, |p| mask.data[p] > 0.5)
}

fn choose_slices_of(d: crate::tensor::Dims, fm: impl Fn(usize) -> bool) -> Vec<usize> {
    let n = d[SLICE_AXIS];
    let mut with_fm = vec![false; n];
    for p in 0..d.iter().product::<usize>() {
        if fm(p) {
            with_fm[p % d[2]] = true;
        }
    }
    let mut pool: Vec<usize> = (0..n).filter(|&k| with_fm[k]).collect();
    if pool.is_empty() {
        pool = (0..n).collect();
    }
    if pool.len() <= MAX_TILES {
        return pool;
    }
    let m = pool.len() - 1;
    (0..MAX_TILES).map(|t| pool[(t * m + (MAX_TILES - 1) / 2) / (MAX_TILES - 1)]).collect()
}

/// Draw the montage of `image` with the outline of `mask` (same grid).
pub fn render(image: &Volume, mask: &Volume) -> Result<Overlay> {
    draw(image, mask, Mode::Outline)
}

/// Draw the montage of `image` with a `[0, 1]` heat map (Grad-CAM) and the outline of `mask`,
/// all on one grid (module docs).
pub fn render_heat(image: &Volume, mask: &Volume, heat: &[f32]) -> Result<Overlay> {
    if heat.len() != mask.data.len() {
        return Err(Error::Shape(format!("overlay: heat map has {} voxels, mask {}", heat.len(), mask.data.len())));
    }
    draw(image, mask, Mode::Heat(heat))
}

/// Draw the montage of `image` with `mask` compared to `truth` (0/1, same grid and voxel
/// order): found, missed and false FM tinted (module docs).
pub fn render_compared(image: &Volume, mask: &Volume, truth: &[u8]) -> Result<Overlay> {
    if truth.len() != mask.data.len() {
        return Err(Error::Shape(format!("overlay: truth has {} voxels, mask {}", truth.len(), mask.data.len())));
    }
    draw(image, mask, Mode::Compared(truth))
}

/// What the montage shows over the image.
#[derive(Clone, Copy)]
enum Mode<'a> {
    Outline,
    Compared(&'a [u8]),
    Heat(&'a [f32]),
}

/// What a screen pixel covers: (predicted FM, true FM, largest heat).
type Cover = (bool, bool, f32);

fn draw(image: &Volume, mask: &Volume, mode: Mode<'_>) -> Result<Overlay> {
    let truth = match mode {
        Mode::Compared(t) => Some(t),
        _ => None,
    };
    if image.dims != mask.dims {
        return Err(Error::Shape(format!("overlay: image {:?} and mask {:?} differ", image.dims, mask.dims)));
    }
    if image.dims.contains(&0) {
        return Err(Error::Shape(format!("overlay: empty image {:?}", image.dims)));
    }
    let (mut lo, mut hi) = (percentile(&image.data, 0.01).unwrap_or(0.0), percentile(&image.data, 0.99).unwrap_or(1.0));
    if hi <= lo {
        (lo, hi) = (percentile(&image.data, 0.0).unwrap_or(0.0), percentile(&image.data, 1.0).unwrap_or(1.0));
    }
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    let view = View::of(image);
    let is_true = |p: usize| truth.is_some_and(|t| t[p] != 0);
    let slices = match mode {
        Mode::Heat(_) => (0..mask.dims[SLICE_AXIS]).collect(),
        _ => choose_slices_of(mask.dims, |p| mask.data[p] > 0.5 || is_true(p)),
    };
    let heat_at = |p: usize| if let Mode::Heat(h) = mode { h[p] } else { 0.0 };
    let cols = (slices.len() as f64).sqrt().ceil().max(1.0) as usize;
    let rows = slices.len().div_ceil(cols);
    let width = GAP + cols * (view.w + GAP);
    let height = GAP + rows * (view.h + GAP);
    let mut rgb: Vec<u8> = GAP_RGB.iter().copied().cycle().take(width * height * 3).collect();
    let d = image.dims;
    let (nh, nv) = (d[view.h_axis], d[view.v_axis]);
    let at = |h: usize, v: usize, k: usize| {
        let mut ijk = [0usize; 3];
        ijk[view.h_axis] = if view.h_flip { nh - 1 - h } else { h };
        ijk[view.v_axis] = if view.v_flip { nv - 1 - v } else { v };
        ijk[2] = k;
        (ijk[0] * d[1] + ijk[1]) * d[2] + ijk[2]
    };
    let mut tiles = Vec::with_capacity(slices.len());
    let mut grey = vec![0u8; view.w * view.h];
    let mut fm: Vec<Cover> = vec![(false, false, 0.0); view.w * view.h];
    for (t, &k) in slices.iter().enumerate() {
        for y in 0..view.h {
            let (v0, v1) = View::span(y, view.h, nv);
            for x in 0..view.w {
                let (h0, h1) = View::span(x, view.w, nh);
                let (mut sum, mut any) = (0f64, (false, false, 0f32));
                for v in v0..v1 {
                    for h in h0..h1 {
                        let p = at(h, v, k);
                        sum += image.data[p] as f64;
                        any.0 |= mask.data[p] > 0.5;
                        any.1 |= is_true(p);
                        any.2 = any.2.max(heat_at(p));
                    }
                }
                let mean = sum / ((v1 - v0) * (h1 - h0)) as f64;
                grey[y * view.w + x] = ((mean - lo as f64) * scale as f64).round().clamp(0.0, 255.0) as u8;
                fm[y * view.w + x] = any;
            }
        }
        let (x0, y0) = (GAP + (t % cols) * (view.w + GAP), GAP + (t / cols) * (view.h + GAP));
        tiles.push((x0, y0));
        for y in 0..view.h {
            for x in 0..view.w {
                let q = y * view.w + x;
                let c = if truth.is_some() {
                    match (fm[q].0, fm[q].1) {
                        (true, true) => tint(grey[q], FOUND_RGB),
                        (false, true) => tint(grey[q], MISSED_RGB),
                        (true, false) => tint(grey[q], FALSE_RGB),
                        (false, false) => [grey[q]; 3],
                    }
                } else {
                    let inside = |q: usize| fm[q].0;
                    let edge = inside(q)
                        && (x == 0
                            || y == 0
                            || x + 1 == view.w
                            || y + 1 == view.h
                            || !inside(q - 1)
                            || !inside(q + 1)
                            || !inside(q - view.w)
                            || !inside(q + view.w));
                    if edge {
                        OUTLINE_RGB
                    } else {
                        heat(grey[q], fm[q].2)
                    }
                };
                let o = ((y0 + y) * width + x0 + x) * 3;
                rgb[o..o + 3].copy_from_slice(&c);
            }
        }
    }
    Ok(Overlay { width, height, rgb, slices, view, tiles })
}

/// A grey level blended with a blue (0) to red (1) ramp, opacity growing with the value.
fn heat(grey: u8, v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0);
    if v <= 0.0 {
        return [grey; 3];
    }
    let ramp = [255.0 * v, 255.0 * (1.0 - (2.0 * v - 1.0).abs()), 255.0 * (1.0 - v)];
    let a = 0.25 + 0.45 * v;
    ramp.map(|c| (grey as f32 * (1.0 - a) + c * a).round() as u8)
}

/// Half-and-half blend of a grey level and a colour.
fn tint(grey: u8, c: [u8; 3]) -> [u8; 3] {
    c.map(|v| ((grey as u16 + v as u16) / 2) as u8)
}

/// The montage as PNG bytes (8-bit RGB).
pub fn encode_png(o: &Overlay) -> Result<Vec<u8>> {
    let err = |e: png::EncodingError| Error::Other(format!("overlay: PNG encoding failed: {e}"));
    let (w, h) = (u32::try_from(o.width), u32::try_from(o.height));
    let (Ok(w), Ok(h)) = (w, h) else {
        return Err(Error::Shape(format!("overlay: {}x{} pixels is too large for PNG", o.width, o.height)));
    };
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().map_err(err)?;
    wr.write_image_data(&o.rgb).map_err(err)?;
    wr.finish().map_err(err)?;
    Ok(out)
}

/// Write the montage to `path` as PNG, atomically.
pub fn write_png(path: &Path, o: &Overlay) -> Result<()> {
    let bytes = encode_png(o)?;
    crate::io::write_atomic(path, |w| w.write_all(&bytes).map_err(|e| Error::io(path, e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Affine;

    fn lps(cols: [[f64; 3]; 3]) -> Affine {
        let mut a = crate::volume::IDENTITY;
        for c in 0..3 {
            for r in 0..3 {
                a[r][c] = cols[c][r];
            }
        }
        a
    }

    #[test]
    fn views_are_radiological() {
        let vol = |a: Affine| Volume::new([8, 6, 3], vec![0.0; 144], a).unwrap();
        // LPS-ordered axial: i -> +x (left) goes right, j -> +y (posterior) goes down
        let v = View::of(&vol(lps([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])));
        assert_eq!((v.h_axis, v.h_flip, v.v_axis, v.v_flip, v.w, v.h), (0, false, 1, false, 8, 6));
        // RAS-ordered axial (i -> right, j -> anterior): both flipped
        let v = View::of(&vol(lps([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])));
        assert_eq!((v.h_axis, v.h_flip, v.v_axis, v.v_flip), (0, true, 1, true));
        // DICOM coronal: i -> +x, j -> -z (rows run down the patient): no flips
        let v = View::of(&vol(lps([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])));
        assert_eq!((v.h_axis, v.h_flip, v.v_axis, v.v_flip), (0, false, 1, false));
        // transposed axial: i -> +y, j -> +x: axes swap
        let v = View::of(&vol(lps([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])));
        assert_eq!((v.h_axis, v.h_flip, v.v_axis, v.v_flip, v.w, v.h), (1, false, 0, false, 6, 8));
        // sagittal: i -> +y goes right (anterior left), j -> -z goes down
        let v = View::of(&vol(lps([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])));
        assert_eq!((v.h_axis, v.h_flip, v.v_axis, v.v_flip), (0, false, 1, false));
        // anisotropic pixels become square: 2 mm along i
        let v = View::of(&vol(lps([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])));
        assert_eq!((v.w, v.h), (16, 6));
    }

    #[test]
    fn slice_choice_and_percentiles() {
        let mut m = Volume::new([2, 2, 40], vec![0.0; 160], crate::volume::IDENTITY).unwrap();
        let all = choose_slices(&m);
        assert_eq!((all.len(), all[0], all[23]), (24, 0, 39));
        assert!(all.windows(2).all(|w| w[1] > w[0] && w[1] - w[0] <= 2), "{all:?}");
        m.data[3] = 1.0;
        m.data[40 + 7] = 1.0;
        assert_eq!(choose_slices(&m), vec![3, 7]);
        let d: Vec<f32> = (0..101).map(|v| v as f32).collect();
        assert_eq!(percentile(&d, 0.01), Some(1.0));
        assert_eq!(percentile(&d, 0.99), Some(99.0));
    }

    #[test]
    fn compared_overlay_tints_found_missed_and_false() {
        // one axial slice of 4 x 1 pixels (LPS identity): found, missed, false, background
        let mut img = Volume::new([4, 1, 2], vec![100.0; 8], crate::volume::IDENTITY).unwrap();
        img.data[7] = 0.0; // a second grey level so the window is not flat
        let mut mask = Volume::new([4, 1, 2], vec![0.0; 8], crate::volume::IDENTITY).unwrap();
        let mut truth = vec![0u8; 8];
        let at = |i: usize| i * 2; // slice k = 0
        mask.data[at(0)] = 1.0;
        truth[at(0)] = 1;
        truth[at(1)] = 1;
        mask.data[at(2)] = 1.0;
        let o = render_compared(&img, &mask, &truth).unwrap();
        assert_eq!(o.slices, vec![0]);
        let (x0, y0) = o.tiles[0];
        let px = |x: usize| {
            let q = (y0 * o.width + x0 + x) * 3;
            [o.rgb[q], o.rgb[q + 1], o.rgb[q + 2]]
        };
        let g = px(3)[0];
        assert_eq!(px(3), [g; 3]);
        assert_eq!(px(0), tint(g, FOUND_RGB));
        assert_eq!(px(1), tint(g, MISSED_RGB));
        assert_eq!(px(2), tint(g, FALSE_RGB));
        // the plain overlay of the same mask outlines instead
        let plain = render(&img, &mask).unwrap();
        let q = (y0 * plain.width + x0) * 3;
        assert_eq!(&plain.rgb[q..q + 3], &OUTLINE_RGB);
        assert!(render_compared(&img, &mask, &truth[..7]).is_err());
    }
}
