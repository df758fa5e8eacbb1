//! T1-weighted tissue intensities (relative to subcutaneous fat = 1) and the marrow texture.

use super::anatomy::Joint;
use super::noise::{Lattice, Texture};
use super::rng::Rng;
use super::scene::Shade;
use super::sdf::{smoothstep, V3};
use std::sync::Arc;

/// Per-case tissue intensities on a spin-echo T1 image, jittered per case and by field strength.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Contrast {
    pub fat: f32,
    pub muscle: f32,
    pub red_marrow: f32,
    pub yellow_marrow: f32,
    /// Mean fat-metaplasia intensity (each lesion varies around it).
    pub fm: f32,
    pub cortex: f32,
    pub cartilage: f32,
    pub ligament: f32,
    pub csf: f32,
    pub nerve: f32,
    pub disc: f32,
    pub artery: f32,
    pub vein: f32,
    pub bowel_wall: f32,
    pub fluid: f32,
    pub skin: f32,
    pub sclerosis: f32,
}

pub fn sample_contrast(rng: &mut Rng, field_t: f64, age: f64) -> Contrast {
    let three_t = field_t > 2.0;
    let muscle = if three_t { rng.uniform_f32(0.29, 0.46) } else { rng.uniform_f32(0.22, 0.39) };
    // Red marrow converts to yellow with age: young adults' sacra are darker.
    let age_f = ((age - 16.0) / 30.0).clamp(0.0, 1.0) as f32;
    let red = (muscle + rng.uniform_f32(0.1, 0.2) + 0.1 * age_f).min(0.66);
    let yellow = rng.uniform_f32(0.76, 0.9);
    let fm = rng.uniform_f32(0.86, 0.98).max(red + 0.25);
    Contrast {
        fat: 1.0 + rng.jitter(0.03),
        muscle,
        red_marrow: red,
        yellow_marrow: yellow,
        fm,
        cortex: rng.uniform_f32(0.03, 0.09),
        cartilage: rng.uniform_f32(0.2, 0.36),
        ligament: rng.uniform_f32(0.12, 0.26),
        csf: rng.uniform_f32(0.1, 0.2),
        nerve: rng.uniform_f32(0.27, 0.4),
        disc: rng.uniform_f32(0.26, 0.38),
        artery: rng.uniform_f32(0.02, 0.1),
        vein: rng.uniform_f32(0.06, 0.4),
        bowel_wall: rng.uniform_f32(0.3, 0.45),
        fluid: rng.uniform_f32(0.08, 0.2),
        skin: rng.uniform_f32(0.45, 0.7),
        sclerosis: rng.uniform_f32(0.06, 0.16),
    }
}

/// Bone marrow: red (cellular) marrow with patches of yellow (fatty) marrow that keep clear of
/// the joint surfaces, and a fine trabecular grain.
pub struct Marrow {
    pub red: f32,
    pub yellow: f32,
    pub patch: Texture,
    pub fine: Texture,
    /// Share of the marrow that is yellow (before the joint clearance).
    pub share: f32,
    pub soft: f32,
    pub fine_amp: f32,
    /// Amplitude of a slow intensity drift of the red marrow.
    pub drift_amp: f32,
    pub joints: Arc<[Joint; 2]>,
    /// Yellow marrow fades in from `clear` to `clear + 6` mm from a joint surface.
    pub clear: f32,
    /// Extra yellow marrow around a point (the sacral body / the lateral ilium): centre, radius, amount.
    pub focus: Option<(V3, f32, f32)>,
    pub lattice: Arc<Lattice>,
}

impl Marrow {
    /// Weight of yellow marrow at `p` (0..1).
    #[inline]
    pub fn yellow_weight(&self, p: V3) -> f32 {
        let mut n = self.patch.fbm2(&self.lattice, p);
        if let Some((c, r, amt)) = self.focus {
            let d2 = (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2);
            n += amt * (-d2 / (r * r)).exp();
        }
        let thr = 1.0 - 2.0 * self.share;
        let y = smoothstep(thr - self.soft, thr + self.soft, n);
        if y <= 0.0 {
            return 0.0;
        }
        let jn = if p[0] >= 0.0 { &self.joints[0] } else { &self.joints[1] };
        let q = jn.q(p[0].abs(), p[1], p[2]).abs();
        y * smoothstep(self.clear, self.clear + 6.0, q)
    }
}

impl Shade for Marrow {
    fn at(&self, p: V3) -> f32 {
        let y = self.yellow_weight(p);
        // The slow drift reads the patch texture at a quarter of its frequency.
        let q = [p[1] * 0.25, p[2] * 0.25, p[0] * 0.25];
        let red = self.red * (1.0 + self.drift_amp * self.patch.at(&self.lattice, q));
        let v = red + (self.yellow - red) * y;
        v * (1.0 + self.fine_amp * self.fine.at(&self.lattice, p))
    }
}
