//! Things that look like fat metaplasia, or change the joint's appearance, and carry no label:
//! fat in the joint space, bright vertebral haemangiomas and endplate (Modic-like) changes,
//! bright-ish degenerative marrow at the anterior joint margin, and the dark changes that
//! accompany sacroiliitis (sclerosis, bone-marrow oedema, erosions). Yellow marrow and
//! intermuscular fat are part of the normal anatomy (`tissue::Marrow`, `pelvis`).

use super::anatomy::{Bone, Joint, Side};
use super::noise::{Lattice, Texture};
use super::patient::{Diagnosis, Patient, Sex};
use super::pelvis::Pelvis;
use super::rng::Rng;
use super::scene::{Flat, Layer, Mottled};
use super::sdf::{ellipse2, ellipsoid3, smax, Aabb, Field, V3};
use super::tissue::Contrast;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Confounder {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bone: Option<Bone>,
}

/// A region near one joint, in joint coordinates: depth `n` below the surface of one bone (or
/// in the joint space when `bone` is `None`), along-joint `s`, level `t`.
struct JointRegion {
    joint: Joint,
    bone: Option<Bone>,
    y0: f32,
    z0: f32,
    r: [f32; 3],
    /// Centre depth below the surface.
    n0: f32,
    /// Clip: the bone's marrow (bone field, cortex) or the joint space.
    clip: Option<(Arc<dyn Field>, f32)>,
    /// Triangle profile (depth tapering along the joint) instead of an ellipsoid.
    triangle: bool,
}

impl Field for JointRegion {
    fn dist(&self, p: V3) -> f32 {
        let jn = &self.joint;
        let q = jn.q(jn.side.sigma() * p[0], p[1], p[2]);
        let (s, t) = (p[1] - self.y0, p[2] - self.z0);
        let d = match self.bone {
            None => smax(ellipse2(s, t, self.r[0], self.r[1]), q.abs() - jn.h, 0.5),
            Some(b) => {
                let n = if b == Bone::Ilium { q - jn.h } else { -q - jn.h };
                if self.triangle {
                    let dd = self.r[2] * (1.0 - s.abs() / self.r[0]);
                    smax(n - dd, ellipse2(s, t, self.r[0], self.r[1]), 1.0)
                } else {
                    ellipsoid3([s, t, n - self.n0], self.r)
                }
            }
        };
        match &self.clip {
            Some((f, off)) if d < 6.0 => d.max(f.dist(p) + off),
            _ => d,
        }
    }
    fn bounds(&self) -> Aabb {
        let jn = &self.joint;
        let (j, jy, _) = jn.j(self.y0, self.z0);
        let sb = match self.bone {
            Some(Bone::Ilium) => 1.0,
            Some(Bone::Sacrum) => -1.0,
            None => 0.0,
        };
        let xl = j + sb * (jn.h + self.n0);
        let rx = self.r[2] + self.n0.abs() + jy.abs() * self.r[0] + 4.0;
        Aabb::around([jn.side.sigma() * xl, self.y0, self.z0], [rx, self.r[0] + 3.0, self.r[1] + 3.0])
    }
}

struct Ball {
    c: V3,
    r: V3,
    clip: Arc<dyn Field>,
    off: f32,
}

impl Field for Ball {
    fn dist(&self, p: V3) -> f32 {
        let d = ellipsoid3([p[0] - self.c[0], p[1] - self.c[1], p[2] - self.c[2]], self.r);
        if d > 6.0 {
            d
        } else {
            d.max(self.clip.dist(p) + self.off)
        }
    }
    fn bounds(&self) -> Aabb {
        Aabb::around(self.c, self.r)
    }
}

/// Draws the confounders for one patient; returns their layers (drawn over bone, before the
/// lesions) and their manifest entries.
pub fn sample_confounders(
    rng: &mut Rng,
    patient: &Patient,
    pv: &Pelvis,
    c: &Contrast,
    lattice: &Arc<Lattice>,
    z_window: (f32, f32),
) -> (Vec<Layer>, Vec<Confounder>) {
    let ax = patient.diagnosis == Diagnosis::AxSpA;
    let older = ((patient.age_years as f64 - 16.0) / 30.0).clamp(0.0, 1.0);
    let mut layers = Vec::new();
    let mut list = Vec::new();
    let sacrum: Arc<dyn Field> = pv.sacrum.clone();
    let ilia: [Arc<dyn Field>; 2] = [pv.ilia[0].clone(), pv.ilia[1].clone()];
    let pick_z = |rng: &mut Rng, jn: &Joint| {
        let (lo, hi) = (z_window.0.max(jn.z_lo + 2.0), z_window.1.min(jn.z_hi - 2.0));
        if lo < hi {
            rng.uniform_f32(lo, hi)
        } else {
            rng.uniform_f32(jn.z_lo, jn.z_hi)
        }
    };
    let push = |layers: &mut Vec<Layer>, list: &mut Vec<Confounder>, kind: &str, side, bone, layer: Layer| {
        layers.push(layer);
        list.push(Confounder { kind: kind.to_string(), side, bone });
    };

    for (k, jn) in pv.joints.iter().enumerate() {
        let side = Some(jn.side);
        // Fat in the joint space.
        if rng.chance(0.35) {
            let z0 = pick_z(rng, jn);
            let (ya, yp) = (jn.ya.at(z0), jn.yp(z0));
            let region = JointRegion {
                joint: jn.clone(),
                bone: None,
                y0: rng.uniform_f32(ya, yp),
                z0,
                r: [rng.uniform_f32(3.0, 9.0), rng.uniform_f32(3.0, 10.0), jn.h],
                n0: 0.0,
                clip: None,
                triangle: false,
            };
            push(
                &mut layers,
                &mut list,
                "fat in joint space",
                side,
                None,
                Layer::new("joint fat", region, Flat(c.fat * rng.uniform_f32(0.85, 1.0))),
            );
        }
        let bone_field = |b: Bone| -> (Arc<dyn Field>, f32) {
            match b {
                Bone::Sacrum => (sacrum.clone(), jn.cortex[0]),
                Bone::Ilium => (ilia[k].clone(), jn.cortex[1]),
            }
        };
        // Sclerosis: dark, triangular, iliac side (osteitis condensans in women without axSpA).
        let p_scl = if !ax && patient.sex == Sex::Female { 0.4 } else { 0.2 };
        if rng.chance(p_scl) {
            let b = if rng.chance(0.75) { Bone::Ilium } else { Bone::Sacrum };
            let z0 = pick_z(rng, jn);
            let (ya, yp) = (jn.ya.at(z0), jn.yp(z0));
            let rs = rng.uniform_f32(5.0, 0.45 * (yp - ya).max(12.0));
            let region = JointRegion {
                joint: jn.clone(),
                bone: Some(b),
                y0: rng.uniform_f32(ya + rs * 0.5, (yp - rs * 0.5).max(ya + rs * 0.5 + 0.1)),
                z0,
                r: [rs, rng.uniform_f32(5.0, 18.0), rng.uniform_f32(4.0, 14.0)],
                n0: 0.0,
                clip: Some(bone_field(b)),
                triangle: true,
            };
            push(
                &mut layers,
                &mut list,
                "sclerosis",
                side,
                Some(b),
                Layer::new("sclerosis", region, Flat(c.sclerosis)),
            );
        }
        // Bone-marrow oedema: lowers the marrow signal near the joint.
        if ax && rng.chance(0.35) {
            let b = if rng.chance(0.5) { Bone::Ilium } else { Bone::Sacrum };
            let z0 = pick_z(rng, jn);
            let (ya, yp) = (jn.ya.at(z0), jn.yp(z0));
            let rd = rng.uniform_f32(3.0, 8.0);
            let region = JointRegion {
                joint: jn.clone(),
                bone: Some(b),
                y0: rng.uniform_f32(ya, yp),
                z0,
                r: [rng.uniform_f32(4.0, 12.0), rng.uniform_f32(4.0, 14.0), rd],
                n0: rd - 1.0,
                clip: Some(bone_field(b)),
                triangle: false,
            };
            let level = c.red_marrow * rng.uniform_f32(0.55, 0.8);
            push(
                &mut layers,
                &mut list,
                "bone marrow oedema",
                side,
                Some(b),
                Layer::new("oedema", region, Flat(level)),
            );
        }
        // Erosions: small defects of the subchondral plate.
        if ax && rng.chance(0.45) {
            for _ in 0..rng.int(1, 4) {
                let b = if rng.chance(0.65) { Bone::Ilium } else { Bone::Sacrum };
                let z0 = pick_z(rng, jn);
                let (ya, yp) = (jn.ya.at(z0), jn.yp(z0));
                let region = JointRegion {
                    joint: jn.clone(),
                    bone: Some(b),
                    y0: rng.uniform_f32(ya, yp),
                    z0,
                    r: [rng.uniform_f32(1.5, 4.0), rng.uniform_f32(2.0, 5.0), rng.uniform_f32(1.2, 3.0)],
                    n0: 0.3,
                    clip: Some((bone_field(b).0, 0.0)),
                    triangle: false,
                };
                let level = c.cartilage * rng.uniform_f32(0.9, 1.4);
                push(&mut layers, &mut list, "erosion", side, Some(b), Layer::new("erosion", region, Flat(level)));
            }
        }
        // Bright-ish degenerative marrow at the anterior joint margin.
        if rng.chance(0.08 + 0.15 * older) {
            let b = if rng.chance(0.6) { Bone::Ilium } else { Bone::Sacrum };
            let z0 = pick_z(rng, jn);
            let ya = jn.ya.at(z0);
            let rd = rng.uniform_f32(2.0, 5.0);
            let region = JointRegion {
                joint: jn.clone(),
                bone: Some(b),
                y0: ya + rng.uniform_f32(-1.0, 2.0),
                z0,
                r: [rng.uniform_f32(2.5, 5.0), rng.uniform_f32(3.0, 8.0), rd],
                n0: rd - 1.0,
                clip: Some(bone_field(b)),
                triangle: false,
            };
            let level = (c.red_marrow + rng.uniform_f32(0.1, 0.18)).min(c.fm - 0.15);
            push(
                &mut layers,
                &mut list,
                "degenerative marrow change",
                side,
                Some(b),
                Layer::new("degenerative", region, Flat(level)),
            );
        }
    }

    // Haemangioma in the sacral body or L5: round, bright, well defined, coarse texture.
    if rng.chance(0.25) {
        let s = &pv.sacrum.s;
        let z = rng.uniform_f32(s.z_top - 45.0, s.z_top + 30.0);
        let (clip, off): (Arc<dyn Field>, f32) = if z > s.z_top + s.disc_h + 3.0 {
            (Arc::new(super::anatomy::L5Body { cy: pv.l5.cy, r: pv.l5.r, z0: pv.l5.z0, z1: pv.l5.z1 }), s.cortex)
        } else {
            (sacrum.clone(), s.cortex)
        };
        let r = rng.uniform_f32(3.0, 8.0);
        let c0 = [rng.jitter(14.0), s.y_ant_mid(z) + rng.uniform_f32(8.0, 22.0), z];
        let shade = Mottled {
            a: c.yellow_marrow * rng.uniform_f32(1.0, 1.12),
            b: c.red_marrow,
            share: 0.15,
            soft: 0.05,
            tex: Texture::new(rng, [1.5, 1.5, 6.0]),
            grain: 0.03,
            lattice: lattice.clone(),
        };
        layers.push(Layer::new(
            "haemangioma",
            Ball { c: c0, r: [r, r * rng.uniform_f32(0.8, 1.2), r], clip, off },
            shade,
        ));
        list.push(Confounder { kind: "haemangioma".into(), side: None, bone: Some(Bone::Sacrum) });
    }
    // Modic-like fatty endplate change at L5-S1.
    if rng.chance(0.1 + 0.1 * older) {
        let s = &pv.sacrum.s;
        let plate = super::shapes::Plate {
            z: s.z_top - 2.5,
            half: rng.uniform_f32(1.5, 3.5),
            slope: 0.0,
            cy: pv.l5.cy,
            r: [pv.l5.r[0] * 0.9, pv.l5.r[1] * 0.9],
        };
        let layer = Layer::new(
            "endplate change",
            super::shapes::Clip { a: Box::new(plate), b: sacrum.clone(), grow: s.cortex },
            Flat(c.yellow_marrow * rng.uniform_f32(0.95, 1.08)),
        );
        layers.push(layer);
        list.push(Confounder { kind: "endplate fatty change".into(), side: None, bone: Some(Bone::Sacrum) });
    }
    (layers, list)
}
