//! The ROC figure (`roc.png`): false-positive rate against true-positive rate, one coloured
//! polyline per model, the chance diagonal, a grid every 0.1 with tick labels every 0.2, and a
//! legend of a swatch and the AUC per model. Drawn into an [`Overlay`] RGB buffer and written by
//! [`overlay::encode_png`]; the digits are a 3x5 pixel font here (no font crate for eleven
//! glyphs). Model names are not drawn: `classification.md` names the colours.

use super::Classification;
use crate::error::Result;
use crate::pipeline::overlay::{self, Overlay, View};

/// Picture size (pixels).
pub const SIZE: usize = 520;
/// The plot square: left/top corner and side (pixels).
const X0: usize = 70;
const Y0: usize = 20;
const SIDE: usize = 420;
// the tick labels below the plot fit in the picture
const _: () = assert!(X0 + SIDE < SIZE && Y0 + SIDE + 30 < SIZE);

/// Model colours, in model order (matplotlib's first two).
pub const COLOURS: [[u8; 3]; 2] = [[31, 119, 180], [255, 127, 14]];
pub const COLOUR_NAMES: [&str; 2] = ["blue", "orange"];

const WHITE: [u8; 3] = [255; 3];
const BLACK: [u8; 3] = [0; 3];
const GRID: [u8; 3] = [225; 3];
const CHANCE: [u8; 3] = [150; 3];

struct Canvas {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let p = (y as usize * self.w + x as usize) * 3;
            self.rgb[p..p + 3].copy_from_slice(&c);
        }
    }

    /// A line `width` pixels thick, stamped every half pixel along it.
    fn line(&mut self, (ax, ay): (f64, f64), (bx, by): (f64, f64), width: i64, c: [u8; 3]) {
        let steps = ((bx - ax).abs().max((by - ay).abs()) * 2.0).ceil().max(1.0) as usize;
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = ((ax + (bx - ax) * t).round() as i64, (ay + (by - ay) * t).round() as i64);
            for dx in 0..width {
                for dy in 0..width {
                    self.set(x + dx - width / 2, y + dy - width / 2, c);
                }
            }
        }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx as i64, yy as i64, c);
            }
        }
    }

    /// `text` (digits, `.`, `-`) at `scale` pixels per font pixel, top-left at (x, y).
    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, c: [u8; 3]) {
        for (i, ch) in text.chars().enumerate() {
            let Some(rows) = glyph(ch) else { continue };
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        self.rect(x + (i * 4 + col) * scale, y + r * scale, scale, scale, c);
                    }
                }
            }
        }
    }
}

/// Pixels wide of `n` characters at `scale`.
fn text_width(n: usize, scale: usize) -> usize {
    (n * 4).saturating_sub(1) * scale
}

/// 3x5 glyphs, one row per entry, bit 2 the left pixel.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        _ => return None,
    })
}

/// Pixel of a rate pair (fpr right, tpr up).
fn px(fpr: f64, tpr: f64) -> (f64, f64) {
    (X0 as f64 + fpr * SIDE as f64, (Y0 + SIDE) as f64 - tpr * SIDE as f64)
}

/// The ROC figure of `c`'s models (at most [`COLOURS`]`.len()`).
pub fn roc_figure(c: &Classification) -> Overlay {
    let mut cv = Canvas { w: SIZE, h: SIZE, rgb: WHITE.repeat(SIZE * SIZE) };
    for k in 0..=10 {
        let f = k as f64 / 10.0;
        cv.line(px(f, 0.0), px(f, 1.0), 1, GRID);
        cv.line(px(0.0, f), px(1.0, f), 1, GRID);
    }
    cv.line(px(0.0, 0.0), px(1.0, 1.0), 1, CHANCE);
    // axes box and ticks with labels every 0.2
    for (a, b) in
        [((0.0, 0.0), (1.0, 0.0)), ((1.0, 0.0), (1.0, 1.0)), ((1.0, 1.0), (0.0, 1.0)), ((0.0, 1.0), (0.0, 0.0))]
    {
        cv.line(px(a.0, a.1), px(b.0, b.1), 2, BLACK);
    }
    let scale = 2;
    for k in (0..=10).step_by(2) {
        let f = k as f64 / 10.0;
        let label = format!("{f:.1}");
        let (x, y) = px(f, 0.0);
        cv.line((x, y), (x, y + 6.0), 2, BLACK);
        cv.text((x as usize).saturating_sub(text_width(label.len(), scale) / 2), y as usize + 10, &label, scale, BLACK);
        let (x, y) = px(0.0, f);
        cv.line((x - 6.0, y), (x, y), 2, BLACK);
        let tw = text_width(label.len(), scale);
        cv.text(x as usize - 10 - tw, (y as usize).saturating_sub(5 * scale / 2), &label, scale, BLACK);
    }
    for (m, colour) in c.models.iter().zip(COLOURS) {
        for w in m.roc.windows(2) {
            cv.line(px(w[0].fpr, w[0].tpr), px(w[1].fpr, w[1].tpr), 3, colour);
        }
    }
    // legend: swatch and AUC per model, lower right inside the plot
    let (lx, mut ly) = (X0 + SIDE - 150, Y0 + SIDE - 20 - 24 * c.models.len().min(COLOURS.len()));
    for (m, colour) in c.models.iter().zip(COLOURS) {
        cv.rect(lx, ly, 30, 10, colour);
        let auc = m.auc.value.map_or("-".to_string(), |a| format!("{a:.3}"));
        cv.text(lx + 40, ly, &auc, scale, BLACK);
        ly += 24;
    }
    let view = View { h_axis: 0, h_flip: false, v_axis: 1, v_flip: false, w: SIZE, h: SIZE };
    Overlay { width: cv.w, height: cv.h, rgb: cv.rgb, slices: Vec::new(), view, tiles: Vec::new() }
}

/// [`roc_figure`] as PNG bytes.
pub fn roc_png(c: &Classification) -> Result<Vec<u8>> {
    overlay::encode_png(&roc_figure(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_and_geometry() {
        assert!(glyph('x').is_none() && glyph('8').is_some());
        assert_eq!(text_width(3, 2), 22);
        assert_eq!(px(0.0, 0.0), (X0 as f64, (Y0 + SIDE) as f64));
        assert_eq!(px(1.0, 1.0), ((X0 + SIDE) as f64, Y0 as f64));
    }
}
