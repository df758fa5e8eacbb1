//! The soft-tissue and spinal shapes the pelvis is drawn with: the skin outline and the
//! fascia under the subcutaneous fat, the pelvic cavity and its small-bowel loops, and a few
//! bony details (the S1-S2 disc remnant, the canal, the L5 arch).

use super::anatomy::Sacrum;
use super::noise::Texture;
use super::sdf::{ellipse2, smax, Aabb, Field, Lin, V3};
use std::sync::Arc;

/// The skin outline: a rounded rectangle flattened against the table behind, with the natal cleft
/// opening below the joints.
pub struct BodyOutline {
    pub a: Lin,
    pub yf: Lin,
    pub yb: Lin,
    /// Corner rounding (fraction of the smaller half side).
    pub round: f32,
    pub flat: f32,
    pub cleft_z: f32,
    pub cleft_depth: f32,
}

impl Field for BodyOutline {
    fn dist(&self, p: V3) -> f32 {
        let [x, y, z] = p;
        let (yf, yb) = (self.yf.at(z), self.yb.at(z));
        let cy = 0.5 * (yf + yb);
        let b = 0.5 * (yb - yf);
        let a = self.a.at(z);
        let mut d = rounded_box(x, y - cy, a, b, self.round);
        d = smax(d, y - (yb - self.flat), 20.0);
        let cleft = super::sdf::smoothstep(self.cleft_z, self.cleft_z - 25.0, z) * self.cleft_depth;
        if cleft > 0.5 {
            d = smax(d, -ellipse2(x, y - yb, 3.0 + 0.25 * cleft, cleft), 4.0);
        }
        d
    }
    fn bounds(&self) -> Aabb {
        let a1 = self.a.range(-250.0, 250.0).1;
        let f0 = self.yf.range(-250.0, 250.0).0;
        let b1 = self.yb.range(-250.0, 250.0).1;
        Aabb::new([-a1, f0, -250.0], [a1, b1, 250.0])
    }
}

/// Distance to a rectangle of half sides `a, b` whose corners are rounded with radius
/// `round * min(a, b)` (exact).
#[inline]
pub fn rounded_box(x: f32, y: f32, a: f32, b: f32, round: f32) -> f32 {
    let r = round * a.min(b);
    let (qx, qy) = (x.abs() - (a - r), y.abs() - (b - r));
    let (ox, oy) = (qx.max(0.0), qy.max(0.0));
    (ox * ox + oy * oy).sqrt() + qx.max(qy).min(0.0) - r
}

/// Subcutaneous fat thickness around the body: more laterally, behind or in front as drawn,
/// with slow irregular variation.
#[derive(Clone, Debug)]
pub struct FatProfile {
    pub base: f32,
    pub lateral: f32,
    pub posterior: f32,
    pub anterior: f32,
    pub ripple: super::noise::Bumps,
}

impl FatProfile {
    #[inline]
    pub fn at(&self, body: &BodyOutline, p: V3) -> f32 {
        let [x, y, z] = p;
        let (yf, yb) = (body.yf.at(z), body.yb.at(z));
        let u = x / body.a.at(z);
        let v = (2.0 * y - yf - yb) / (yb - yf);
        let t = self.base
            + self.lateral * u * u
            + self.posterior * v.max(0.0).powi(2)
            + self.anterior * (-v).max(0.0).powi(2)
            + self.ripple.height(x, y);
        t.max(2.0)
    }
}

/// The deep fascia: the body outline moved in by the subcutaneous fat.
pub struct Fascia {
    pub body: Arc<BodyOutline>,
    pub fat: FatProfile,
}

impl Field for Fascia {
    fn dist(&self, p: V3) -> f32 {
        self.body.dist(p) + self.fat.at(&self.body, p)
    }
    fn bounds(&self) -> Aabb {
        self.body.bounds()
    }
}

/// The pelvic cavity: inside the abdominal wall (the fascia moved in by the wall's thickness)
/// and in front of a curve from the sacrum's anterior surface out to the inner faces of the
/// iliac wings.
#[derive(Clone, Debug)]
pub struct Cavity {
    pub wall: f32,
    pub back_mid: Lin,
    pub tip_x: Lin,
    pub tip_y: Lin,
}

impl Cavity {
    /// Distance (about normal) in front of the posterior curve (negative in front).
    #[inline]
    pub fn back(&self, p: V3) -> f32 {
        let [x, y, z] = p;
        let (m, tx, ty) = (self.back_mid.at(z), self.tip_x.at(z).max(20.0), self.tip_y.at(z));
        let u = x / tx;
        let yb = m + (ty - m) * u * u;
        let slope = 2.0 * (ty - m) * x / (tx * tx);
        (y - yb) / (1.0 + slope * slope).sqrt()
    }

    #[inline]
    pub fn dist_given(&self, fascia: f32, p: V3) -> f32 {
        smax(fascia + self.wall, self.back(p), 10.0)
    }
}

/// The subcutaneous fat: inside the skin, outside the fascia.
pub struct Subcutis {
    pub fascia: Arc<Fascia>,
    pub skin: f32,
}

impl Field for Subcutis {
    fn dist(&self, p: V3) -> f32 {
        let b = self.fascia.body.dist(p);
        let f = b + self.fascia.fat.at(&self.fascia.body, p);
        (b + self.skin).max(-f)
    }
    fn bounds(&self) -> Aabb {
        self.fascia.bounds()
    }
}

/// Everything outside a shape (within the shape's box grown by 50 mm).
pub struct Outside<F: Field>(pub Arc<F>);

impl<F: Field> Field for Outside<F> {
    fn dist(&self, p: V3) -> f32 {
        -self.0.dist(p)
    }
    fn bounds(&self) -> Aabb {
        self.0.bounds().grow(50.0)
    }
}

/// The skin: a shell `skin` mm thick under the body outline.
pub struct Skin {
    pub body: Arc<BodyOutline>,
    pub skin: f32,
}

impl Field for Skin {
    fn dist(&self, p: V3) -> f32 {
        let b = self.body.dist(p);
        (b + 0.5 * self.skin).abs() - 0.5 * self.skin
    }
    fn bounds(&self) -> Aabb {
        self.body.bounds()
    }
}

/// Inside the fascia and outside the cavity (`inside = false`), or inside both.
pub struct Compartment {
    pub fascia: Arc<Fascia>,
    pub cavity: Arc<Cavity>,
    pub inside: bool,
}

impl Compartment {
    pub fn cavity(fascia: Arc<Fascia>, cavity: Arc<Cavity>) -> Self {
        Compartment { fascia, cavity, inside: true }
    }
}

impl Field for Compartment {
    fn dist(&self, p: V3) -> f32 {
        let f = self.fascia.dist(p);
        let c = self.cavity.dist_given(f, p);
        if self.inside {
            c
        } else {
            f.max(-c)
        }
    }
    fn bounds(&self) -> Aabb {
        let b = self.fascia.bounds();
        if !self.inside {
            return b;
        }
        // The cavity lies in front of its posterior curve.
        let c = &self.cavity;
        let back = c.back_mid.range(b.lo[2], b.hi[2]).1.max(c.tip_y.range(b.lo[2], b.hi[2]).1);
        Aabb::new(b.lo, [b.hi[0], b.hi[1].min(back + 5.0), b.hi[2]])
    }
}

/// Small-bowel loops: where a smooth random field is near zero (a ridged network of tubes),
/// inside the pelvic cavity.
pub struct BowelNet {
    pub tex: Texture,
    pub width: f32,
    pub lattice: Arc<super::noise::Lattice>,
    pub cavity: Arc<Compartment>,
}

impl Field for BowelNet {
    fn dist(&self, p: V3) -> f32 {
        // Cut at the cavity's posterior curve only: elsewhere outside the cavity the muscle
        // compartment and the subcutaneous fat are painted over it.
        let back = self.cavity.cavity.back(p);
        if back > 10.0 {
            return back;
        }
        // The field changes by about 1.5 per lattice cell: distance ~ value / slope.
        let n = self.tex.fbm2(&self.lattice, p).abs() - self.width;
        (n / (1.5 * self.tex.inv_scale[0])).max(back)
    }
    fn bounds(&self) -> Aabb {
        self.cavity.bounds()
    }
}

/// `a` inside `b` (both trait objects).
pub struct Clip {
    pub a: Box<dyn Field>,
    pub b: Arc<dyn Field>,
    pub grow: f32,
}

impl Field for Clip {
    fn dist(&self, p: V3) -> f32 {
        let d = self.a.dist(p);
        if d > 10.0 {
            return d;
        }
        d.max(self.b.dist(p) + self.grow)
    }
    fn bounds(&self) -> Aabb {
        self.a.bounds()
    }
}

/// The S1-S2 disc remnant: a thin plate across the sacral body.
pub struct Plate {
    pub z: f32,
    pub half: f32,
    pub slope: f32,
    pub cy: f32,
    pub r: [f32; 2],
}

impl Field for Plate {
    fn dist(&self, p: V3) -> f32 {
        let zc = self.z + self.slope * (p[1] - self.cy);
        smax((p[2] - zc).abs() - self.half, ellipse2(p[0], p[1] - self.cy, self.r[0], self.r[1]), 2.0)
    }
    fn bounds(&self) -> Aabb {
        let dz = self.half + self.slope.abs() * self.r[1] + 1.0;
        Aabb::new([-self.r[0], self.cy - self.r[1], self.z - dz], [self.r[0], self.cy + self.r[1], self.z + dz])
    }
}

/// The sacral canal (below and above the sacrum's top): epidural fat with nerve roots.
pub struct Canal {
    pub sacrum: Arc<Sacrum>,
    pub shrink: f32,
    pub z0: f32,
}

impl Field for Canal {
    fn dist(&self, p: V3) -> f32 {
        smax(self.sacrum.canal(p) + self.shrink, self.z0 - p[2], 4.0)
    }
    fn bounds(&self) -> Aabb {
        let s = &self.sacrum.s;
        let w = s.canal_w.range(-150.0, 150.0).1 * 1.4 + 2.0;
        let (y0, _, _) = s.canal_centre(s.z_top);
        let (y1, _, _) = s.canal_centre(-140.0);
        let h = s.canal_h.range(-150.0, 150.0).1 + 2.0;
        Aabb::new([-w, y0.min(y1) - h - 4.0, self.z0.max(s.z_bottom)], [w, y0.max(y1) + h + 4.0, 150.0])
    }
}

/// The L5 posterior arch (laminae and spinous process) above the sacrum.
pub struct L5Arch {
    pub sacrum: Arc<Sacrum>,
    pub z0: f32,
}

impl Field for L5Arch {
    fn dist(&self, p: V3) -> f32 {
        let s = &self.sacrum.s;
        let (yc, w, h) = s.canal_centre(p[2]);
        let ring = ellipse2(p[0], p[1] - yc, w + 7.0, h + 6.0).max(-ellipse2(p[0], p[1] - yc, w, h));
        let ring = ring.max(yc - 2.0 - p[1]);
        let (d, _) = super::sdf::segment2(p[0], p[1], 0.0, yc + h + 4.0, 0.0, yc + h + 30.0);
        let spin = d - 4.5;
        smax(super::sdf::smin(ring, spin, 3.0), self.z0 - p[2], 3.0)
    }
    fn bounds(&self) -> Aabb {
        let s = &self.sacrum.s;
        let (yc, w, h) = s.canal_centre(s.z_top);
        Aabb::new([-w - 10.0, yc - h - 8.0, self.z0], [w + 10.0, yc + h + 40.0, 200.0])
    }
}
