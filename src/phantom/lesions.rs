//! Fat-metaplasia lesions: bright, fairly homogeneous subchondral regions along the synovial
//! part of the joint, on the iliac and/or sacral side, in four shapes (a band along the
//! subchondral plate, a triangle with its base on the joint, a blob, an irregular blob), with
//! sharp or slightly blurred margins. Each is clipped to the marrow of its bone, so it abuts
//! the (dark) subchondral plate and never leaves bone.

use super::anatomy::{Bone, Joint, Side};
use super::noise::{Lattice, Texture};
use super::patient::Diagnosis;
use super::rng::Rng;
use super::scene::{FmShape, Textured};
use super::sdf::{ellipse2, ellipsoid3, smax, Aabb, Field, V3};
use super::tissue::Contrast;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LesionShape {
    Band,
    Triangle,
    Blob,
    Irregular,
}

/// Deepest reach of any lesion below the bone surface at the joint (cortex included), mm.
pub const MAX_DEPTH_MM: f32 = 12.0;

/// A lesion as drawn (before rendering decides how many voxels it covers).
#[derive(Clone, Debug)]
pub struct LesionSpec {
    pub side: Side,
    pub bone: Bone,
    pub shape: LesionShape,
    /// Centre along the joint (y) and level (z), pelvis frame.
    pub y0: f32,
    pub z0: f32,
    /// Half extents along the joint and along z; depth into the marrow below the subchondral
    /// plate.
    pub rs: f32,
    pub rz: f32,
    pub depth: f32,
    pub blur: f32,
    pub level: f32,
    pub texture: f32,
    /// Volume the shape would have as drawn, before clipping to marrow and sampling, ml.
    pub planned_ml: f32,
}

/// A lesion's shape inside its bone's marrow.
pub struct LesionField {
    pub spec: LesionSpec,
    pub joint: Joint,
    pub bone: Arc<dyn Field>,
    pub cortex: f32,
    pub tex: Texture,
    pub lattice: Arc<Lattice>,
}

impl LesionField {
    /// Depth below the subchondral surface of this lesion's bone (positive inside the bone).
    #[inline]
    fn depth_of(&self, p: V3) -> f32 {
        let jn = &self.joint;
        let q = jn.q(jn.side.sigma() * p[0], p[1], p[2]);
        let sb = if self.spec.bone == Bone::Ilium { 1.0 } else { -1.0 };
        sb * q - jn.h
    }

    #[inline]
    fn shape_dist(&self, p: V3) -> f32 {
        let sp = &self.spec;
        // Depth below the subchondral plate (the marrow's edge), where the lesion starts.
        let n = self.depth_of(p) - self.cortex;
        let s = p[1] - sp.y0;
        let t = p[2] - sp.z0;
        match sp.shape {
            LesionShape::Blob | LesionShape::Irregular => {
                let rd = 0.5 * sp.depth + 0.5;
                let d = ellipsoid3([s, t, n - (rd - 1.0)], [sp.rs, sp.rz, rd]);
                if sp.shape == LesionShape::Irregular {
                    d + 0.35 * sp.rs.min(sp.rz).min(rd) * self.tex.fbm2(&self.lattice, p) * 2.0
                } else {
                    d
                }
            }
            LesionShape::Band => {
                let r2 = (s / sp.rs).powi(2) + (t / sp.rz).powi(2);
                let dd = sp.depth * (1.0 - 0.5 * r2).max(0.3);
                smax(n - dd, ellipse2(s, t, sp.rs, sp.rz), 1.0)
            }
            LesionShape::Triangle => {
                let dd = sp.depth * (1.0 - s.abs() / sp.rs);
                let g = (1.0 + (sp.depth / sp.rs).powi(2)).sqrt();
                smax((n - dd) / g, ellipse2(s, t, sp.rs * 1.02, sp.rz), 0.8)
            }
        }
    }
}

impl Field for LesionField {
    fn dist(&self, p: V3) -> f32 {
        let d = self.shape_dist(p);
        if d > 6.0 {
            return d;
        }
        // Inside the marrow, and never deeper than the cap.
        d.max(self.bone.dist(p) + self.cortex).max(self.depth_of(p) - MAX_DEPTH_MM)
    }
    fn bounds(&self) -> Aabb {
        let sp = &self.spec;
        let jn = &self.joint;
        let sb = if sp.bone == Bone::Ilium { 1.0 } else { -1.0 };
        let (j, jy, _) = jn.j(sp.y0, sp.z0);
        let xl = j + sb * (jn.h + self.cortex + 0.5 * sp.depth);
        let rx = 0.5 * sp.depth + jy.abs() * sp.rs + 4.0;
        Aabb::around([jn.side.sigma() * xl, sp.y0, sp.z0], [rx, sp.rs + 3.0, sp.rz + 3.0])
    }
}

/// Draws the lesions of one patient. `z_window` is the range of levels the slab covers at the
/// joints (lesions are centred inside it so that they are imaged). With age (and so, in
/// axSpA, disease duration) lesions become more numerous, larger and deeper: focal
/// subchondral bands and blobs in the young, extensive fatty change in older patients.
pub fn sample_lesions(
    rng: &mut Rng,
    dx: Diagnosis,
    age: u32,
    joints: &[Joint; 2],
    c: &Contrast,
    z_window: (f32, f32),
) -> Vec<LesionSpec> {
    let ax = dx == Diagnosis::AxSpA;
    let older = ((age as f32 - 20.0) / 30.0).clamp(0.0, 1.0);
    let count = if ax {
        (1 + rng.poisson(1.7 + 1.6 * older as f64)).min(9)
    } else if rng.chance(0.38 - 0.12 * older as f64) {
        0
    } else {
        (1 + rng.poisson(0.4)).min(3)
    };
    let bilateral = ax && rng.chance(0.7);
    let first_side = if rng.chance(0.5) { Side::Left } else { Side::Right };
    let mut out = Vec::new();
    for n in 0..count {
        let side = if bilateral && n % 2 == 1 {
            other(first_side)
        } else if bilateral || rng.chance(0.75) {
            first_side
        } else {
            other(first_side)
        };
        let jn = &joints[if side == Side::Left { 0 } else { 1 }];
        let bone = if rng.chance(0.6) { Bone::Ilium } else { Bone::Sacrum };
        let o = older as f64;
        let shape = [LesionShape::Band, LesionShape::Triangle, LesionShape::Blob, LesionShape::Irregular]
            [rng.weighted(&[0.4 - 0.15 * o, 0.15 + 0.1 * o, 0.25, 0.2 + 0.05 * o])];
        let ml = if !ax {
            rng.log_uniform(0.01, 0.3 + 0.4 * o)
        } else if n == 0 && rng.chance(0.2 + 0.35 * o) {
            rng.log_uniform(1.5, 5.0 + 5.0 * o)
        } else {
            rng.log_uniform(0.03, 1.2 + 2.3 * o)
        } as f32;
        let v = ml * 1000.0;
        let deeper = 0.75 + 0.35 * older;
        let depth = (match shape {
            LesionShape::Band => rng.uniform_f32(2.0, 4.5),
            LesionShape::Triangle => rng.uniform_f32(4.0, 10.0),
            _ => rng.uniform_f32(3.0, 11.0),
        } * deeper)
            .clamp(2.0, MAX_DEPTH_MM - 2.5);
        let area = match shape {
            LesionShape::Band => v / (0.75 * std::f32::consts::PI * depth),
            LesionShape::Triangle => v / (0.5 * std::f32::consts::PI * depth),
            _ => v / (0.6 * std::f32::consts::PI * depth),
        };
        let aspect = rng.uniform_f32(0.6, 1.8);
        let (lo, hi) = (z_window.0.max(jn.z_lo + 3.0), z_window.1.min(jn.z_hi - 3.0));
        let z0 = if lo < hi { rng.uniform_f32(lo, hi) } else { rng.uniform_f32(jn.z_lo + 3.0, jn.z_hi - 3.0) };
        let (ya, yp) = (jn.ya.at(z0), jn.yp(z0));
        let len = (yp - ya).max(8.0);
        let rs = (area / aspect).sqrt().clamp(2.0, 0.6 * len);
        let rz = (area / rs).clamp(2.5, 25.0);
        let y0 = rng.uniform_f32(ya + 0.35 * rs.min(0.4 * len), yp - 0.35 * rs.min(0.4 * len));
        let level = if rng.chance(0.2) {
            (c.fat * rng.uniform_f32(0.76, 0.86)).max(c.red_marrow + 0.2)
        } else {
            (c.fm * rng.uniform_f32(0.95, 1.05)).min(c.fat * 1.02)
        };
        let blur = if rng.chance(0.6) { rng.uniform_f32(0.0, 0.3) } else { rng.uniform_f32(0.8, 2.5) };
        let factor = match shape {
            LesionShape::Band => 0.75,
            LesionShape::Triangle => 0.5,
            _ => 0.6,
        } * std::f32::consts::PI;
        let planned_ml = factor * rs * rz * depth / 1000.0;
        out.push(LesionSpec {
            side,
            bone,
            shape,
            y0,
            z0,
            rs,
            rz,
            depth,
            blur,
            level,
            texture: rng.uniform_f32(0.015, 0.05),
            planned_ml,
        });
    }
    out
}

fn other(s: Side) -> Side {
    match s {
        Side::Left => Side::Right,
        Side::Right => Side::Left,
    }
}

/// Builds the drawable lesion set.
pub fn lesion_shapes(
    specs: &[LesionSpec],
    joints: &[Joint; 2],
    sacrum: Arc<dyn Field>,
    ilia: [Arc<dyn Field>; 2],
    rng: &mut Rng,
    lattice: &Arc<Lattice>,
) -> Vec<FmShape> {
    specs
        .iter()
        .map(|sp| {
            let k = if sp.side == Side::Left { 0 } else { 1 };
            let jn = joints[k].clone();
            let (bone, cortex) = match sp.bone {
                Bone::Sacrum => (sacrum.clone(), jn.cortex[0]),
                Bone::Ilium => (ilia[k].clone(), jn.cortex[1]),
            };
            let scale = rng.uniform_f32(2.5, 5.0);
            let f = LesionField {
                spec: sp.clone(),
                joint: jn,
                bone,
                cortex,
                tex: Texture::isotropic(rng, scale),
                lattice: lattice.clone(),
            };
            let bounds = f.bounds().grow(super::scene::FM_BOX_GROWTH);
            let shade = Textured {
                base: sp.level,
                amp: sp.texture,
                tex: Texture::isotropic(rng, 2.0),
                lattice: lattice.clone(),
            };
            FmShape { field: Box::new(f), bounds, shade: Box::new(shade), blur: sp.blur }
        })
        .collect()
}
