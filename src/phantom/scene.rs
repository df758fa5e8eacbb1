//! What the renderer draws: layers painted in order (each a shape with one or more bands of
//! intensity at distance offsets, e.g. a bone's dark cortex then its marrow 1.5 mm inside), and
//! the set of fat-metaplasia lesions, the one layer that also writes the ground-truth mask.

use super::noise::{Lattice, Texture};
use super::sdf::{Aabb, Field, V3};
use std::sync::Arc;

/// Relative T1 intensity of a tissue at a point (subcutaneous fat is about 1).
pub trait Shade: Send + Sync {
    fn at(&self, p: V3) -> f32;
}

/// A uniform tissue.
pub struct Flat(pub f32);

impl Shade for Flat {
    fn at(&self, _p: V3) -> f32 {
        self.0
    }
}

/// A tissue with a smooth multiplicative texture: `base * (1 + amp * fbm(p))`.
pub struct Textured {
    pub base: f32,
    pub amp: f32,
    pub tex: Texture,
    pub lattice: Arc<Lattice>,
}

impl Shade for Textured {
    fn at(&self, p: V3) -> f32 {
        self.base * (1.0 + self.amp * self.tex.at(&self.lattice, p))
    }
}

/// A tissue of two components mixed by a thresholded random field: muscle with fatty
/// marbling, ligaments with fat between their fibres, bowel content with gas.
pub struct Mottled {
    pub a: f32,
    pub b: f32,
    /// Fraction of the field's range given to `b`: the field is compared to `1 - 2 * share`.
    pub share: f32,
    /// Width of the transition in field units (small: sharp streaks).
    pub soft: f32,
    pub tex: Texture,
    /// Low-amplitude overall texture of component `a`.
    pub grain: f32,
    pub lattice: Arc<Lattice>,
}

impl Shade for Mottled {
    fn at(&self, p: V3) -> f32 {
        let n = self.tex.fbm2(&self.lattice, p);
        let thr = 1.0 - 2.0 * self.share;
        let m = super::sdf::smoothstep(thr - self.soft, thr + self.soft, n);
        // The field itself, away from the threshold, doubles as a faint grain.
        let a = self.a * (1.0 + self.grain * n);
        a + (self.b - a) * m
    }
}

/// One intensity band of a layer: drawn where the layer's distance is below `-offset`.
pub struct Band {
    pub offset: f32,
    pub shade: Box<dyn Shade>,
}

pub struct Layer {
    pub name: &'static str,
    pub field: Box<dyn Field>,
    pub bands: Vec<Band>,
}

impl Layer {
    pub fn new(name: &'static str, field: impl Field + 'static, shade: impl Shade + 'static) -> Self {
        Layer { name, field: Box::new(field), bands: vec![Band { offset: 0.0, shade: Box::new(shade) }] }
    }

    pub fn band(mut self, offset: f32, shade: impl Shade + 'static) -> Self {
        self.bands.push(Band { offset, shade: Box::new(shade) });
        self
    }
}

/// One fat-metaplasia lesion as drawn: its shape (already clipped to the marrow of its bone),
/// its intensity and the extra width (mm) of its blurred margin.
pub struct FmShape {
    pub field: Box<dyn Field>,
    pub bounds: Aabb,
    pub shade: Box<dyn Shade>,
    pub blur: f32,
}

#[derive(Default)]
pub struct FmSet {
    pub lesions: Vec<FmShape>,
}

impl FmSet {
    pub fn bounds(&self) -> Option<Aabb> {
        self.lesions.iter().map(|l| l.bounds).reduce(|a, b| a.union(&b))
    }

    /// Distance to the union and the index of the nearest lesion (`u16::MAX` if `p` is outside
    /// every lesion's box). Outside a box the distance is bounded below by the distance to the
    /// box plus the margin the box was grown by, which keeps the field continuous enough for
    /// the renderer's slope estimate.
    #[inline]
    pub fn dist_id(&self, p: V3) -> (f32, u16) {
        let mut best = (f32::MAX, u16::MAX);
        for (i, l) in self.lesions.iter().enumerate() {
            let d = if l.bounds.contains(p) {
                let d = l.field.dist(p);
                if d < best.0 {
                    best = (d, i as u16);
                }
                continue;
            } else {
                box_distance(&l.bounds, p) + FM_BOX_GROWTH
            };
            if d < best.0 {
                best.0 = d;
            }
        }
        best
    }
}

/// How much each lesion's box is grown beyond its shape.
pub const FM_BOX_GROWTH: f32 = 8.0;

fn box_distance(b: &Aabb, p: V3) -> f32 {
    (0..3).map(|a| (b.lo[a] - p[a]).max(p[a] - b.hi[a]).max(0.0).powi(2)).sum::<f32>().sqrt()
}

pub struct Scene {
    pub layers: Vec<Layer>,
    pub fm: FmSet,
}
