//! The bony pelvis at the sacroiliac joints, as implicit shapes in the pelvis frame (x to the
//! patient's left, y posterior, z along the sacral axis towards the head; z = 0 is the middle of
//! the joints, x = 0 the midline).
//!
//! Everything hangs off one model of each joint: the mid-surface of the joint space,
//! `x' = J(y, z)` on that side (`x' = sigma * x`, lateral positive), curved and undulating like
//! an auricular surface, with the sacral ala medial and the ilium lateral of it at `h` (half the
//! joint width). Posterior of the synovial part the two bones diverge around the interosseous
//! ligament; anterior of it they open towards the pelvis; below the joint the sacrum narrows
//! away from the ilium (greater sciatic notch) and above it the ilium leaves the sacral ala.

use super::noise::Bumps;
use super::rng::Rng;
use super::sdf::{ellipse2, lerp, segment2, smax, smin, smoothstep, Aabb, Field, Lin, V3};
use std::sync::Arc;

/// Patient side: left is +x (LPS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Left,
    Right,
}

impl Side {
    pub fn sigma(self) -> f32 {
        match self {
            Side::Left => 1.0,
            Side::Right => -1.0,
        }
    }
    pub fn of_x(x: f32) -> Side {
        if x >= 0.0 {
            Side::Left
        } else {
            Side::Right
        }
    }
}

/// Which bone of the joint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bone {
    Sacrum,
    Ilium,
}

/// One sacroiliac joint.
#[derive(Clone, Debug)]
pub struct Joint {
    pub side: Side,
    /// Mid-surface half-width of the sacrum: `w0 + w1 * z/50 + w2 * (z/50)^2`.
    pub w: [f32; 3],
    /// Reference y of the surface tilt.
    pub yc: f32,
    /// Convergence of the joint lines towards posterior, `tan(beta)`, by level.
    pub tanb: Lin,
    /// Bow of the joint line in the axial plane.
    pub kappa: f32,
    /// Irregularities of the auricular surface (height over `(y, z)`).
    pub bumps: Arc<Bumps>,
    /// Half the joint width (cartilage + fluid), mm.
    pub h: f32,
    /// Synovial part: levels and anterior/posterior limits.
    pub z_lo: f32,
    pub z_hi: f32,
    pub ya: Lin,
    /// Length of the synovial part along y, by level.
    pub len: Lin,
    /// Extra separation of sacrum / ilium behind the synovial part (interosseous ligament).
    pub lig: [f32; 2],
    /// Opening towards the pelvis in front of the synovial part.
    pub open: [f32; 2],
    /// Separation rate (mm per mm) below and above the joint: [sacrum, ilium].
    pub sep_below: [f32; 2],
    pub sep_above: [f32; 2],
    /// Cortical thickness of the sacral and iliac subchondral plates.
    pub cortex: [f32; 2],
}

impl Joint {
    #[inline]
    fn wz(&self, z: f32) -> (f32, f32) {
        let u = z / 50.0;
        (self.w[0] + self.w[1] * u + self.w[2] * u * u, (self.w[1] + 2.0 * self.w[2] * u) / 50.0)
    }

    /// Mid-surface `J(y, z)` and its partial derivatives.
    #[inline]
    pub fn j(&self, y: f32, z: f32) -> (f32, f32, f32) {
        let (w, wz) = self.wz(z);
        let dy = y - self.yc;
        let tb = self.tanb.at(z);
        let (u, uy, uz) = self.bumps.at(y, z);
        let j = w - tb * dy + self.kappa * dy * dy / 20.0 + u;
        let jy = -tb + self.kappa * dy / 10.0 + uy;
        let jz = wz - (self.tanb.b + 2.0 * self.tanb.c * z) * dy + uz;
        (j, jy, jz)
    }

    /// Signed distance (about normal) from the joint mid-surface, positive towards the ilium,
    /// for a point with lateral coordinate `xl = sigma * x`.
    #[inline]
    pub fn q(&self, xl: f32, y: f32, z: f32) -> f32 {
        let (j, jy, jz) = self.j(y, z);
        (xl - j) / (1.0 + jy * jy + jz * jz).sqrt()
    }

    pub fn yp(&self, z: f32) -> f32 {
        self.ya.at(z) + self.len.at(z)
    }

    /// Separation outside the joint's levels, [sacrum, ilium].
    #[inline]
    fn sep(&self, z: f32) -> [f32; 2] {
        let ease = |t: f32| {
            if t <= 0.0 {
                0.0
            } else if t < 6.0 {
                t * t / 12.0
            } else {
                t - 3.0
            }
        };
        let below = ease(self.z_lo - z);
        let above = ease(z - self.z_hi);
        [below * self.sep_below[0] + above * self.sep_above[0], below * self.sep_below[1] + above * self.sep_above[1]]
    }

    /// Extra gap beyond `h` on the sacral and iliac side at `(y, z)`.
    #[inline]
    pub fn extra(&self, y: f32, z: f32) -> [f32; 2] {
        let post = smoothstep(0.0, 8.0, y - self.yp(z));
        let ant = smoothstep(0.0, 6.0, self.ya.at(z) - y);
        let sep = self.sep(z);
        [self.lig[0] * post + self.open[0] * ant + sep[0], self.lig[1] * post + self.open[1] * ant + sep[1]]
    }

    /// Signed distance of `(y, z)` from the synovial part's outline (negative inside).
    #[inline]
    pub fn synovial(&self, y: f32, z: f32) -> f32 {
        let ya = self.ya.at(z);
        let yp = self.yp(z);
        smax((ya - y).max(y - yp), (self.z_lo - z).max(z - self.z_hi), 8.0)
    }
}

/// Sacrum (with L5 above it) parameters.
#[derive(Clone, Debug)]
pub struct SacrumShape {
    /// Anterior surface at the midline: `a0 - a2 * (z/50)^2` (the sacrum is concave forward).
    pub a0: f32,
    pub a2: f32,
    /// Anterior-posterior thickness at the midline: `t0 + t1 * z/50`.
    pub t0: f32,
    pub t1: f32,
    /// How far behind the midline's anterior surface the alae's anterior surface lies, and how
    /// far in front of the crest their posterior surface lies (at x = 50 mm).
    pub ala_ant: f32,
    /// Forward bulge of the vertebral body over the alae at the midline.
    pub bulge: f32,
    pub ala_post: f32,
    /// Median sacral crest height.
    pub crest: f32,
    /// S1 endplate level at the midline and its lateral drop.
    pub z_top: f32,
    pub top_drop: f32,
    pub z_bottom: f32,
    /// Sacral canal: half width and half depth at the top and bottom, lamina thickness.
    pub canal_w: Lin,
    pub canal_h: Lin,
    pub lamina: f32,
    /// Level where the thecal sac ends (below: fat and roots only).
    pub z_sac_end: f32,
    /// Foramina (per side): level, radius.
    pub foramina: Vec<(Side, f32, f32)>,
    /// L5-S1 disc height; L5 body half width / half depth.
    pub disc_h: f32,
    pub l5: [f32; 2],
    pub cortex: f32,
}

impl SacrumShape {
    #[inline]
    pub fn y_ant_mid(&self, z: f32) -> f32 {
        let u = z / 50.0;
        self.a0 - self.a2 * u * u
    }
    #[inline]
    pub fn y_ant(&self, xl: f32, z: f32) -> f32 {
        let u = xl / 50.0;
        let b = (1.0 - (xl / self.l5[0]).powi(2)).max(0.0);
        self.y_ant_mid(z) + self.ala_ant * u * u - self.bulge * b * b
    }
    #[inline]
    pub fn thickness(&self, z: f32) -> f32 {
        self.t0 + self.t1 * z / 50.0
    }
    #[inline]
    pub fn y_post(&self, xl: f32, z: f32) -> f32 {
        let u = xl / 50.0;
        self.y_ant_mid(z) + self.thickness(z) - self.ala_post * u * u + self.crest / (1.0 + xl * xl / 30.0)
    }
    pub fn canal_centre(&self, z: f32) -> (f32, f32, f32) {
        let h = self.canal_h.at(z).max(2.5);
        let w = self.canal_w.at(z).max(3.5);
        let yc = self.y_post(0.0, z) - self.crest - self.lamina - h;
        (yc, w, h)
    }
    pub fn z_top_at(&self, xl: f32) -> f32 {
        self.z_top - self.top_drop * (xl / 50.0).powi(2)
    }
}

/// The sacrum as a shape: a slab between the anterior and posterior surfaces, bounded
/// laterally by both joints, capped at S1, with the canal and foramina carved out.
pub struct Sacrum {
    pub s: SacrumShape,
    pub joints: [Joint; 2],
    pub foramina: Vec<Foramen>,
}

/// A foramen: an anterior tube from the canal to the anterior surface and a smaller posterior
/// one; it holds fat around a nerve root.
#[derive(Clone, Debug)]
pub struct Foramen {
    pub side: Side,
    /// `bounds()`, kept.
    pub bbox: Aabb,
    pub a: V3,
    pub b: V3,
    pub r: f32,
    pub pa: V3,
    pub pb: V3,
    pub pr: f32,
}

impl Foramen {
    /// Distance; beyond 10 mm of its box, the (smaller) distance to the box.
    #[inline]
    pub fn dist(&self, p: V3) -> f32 {
        let b = &self.bbox;
        let out = (0..3).map(|a| (b.lo[a] - p[a]).max(p[a] - b.hi[a]).max(0.0)).fold(0.0f32, |s, e| s + e * e).sqrt();
        if out > 10.0 {
            return out;
        }
        let d1 = super::sdf::segment3(p, self.a, self.b).0 - self.r;
        let d2 = super::sdf::segment3(p, self.pa, self.pb).0 - self.pr;
        smin(d1, d2, 1.5)
    }
    pub fn bounds(&self) -> Aabb {
        let m = self.r.max(self.pr);
        let mut lo = [0.0; 3];
        let mut hi = [0.0; 3];
        for i in 0..3 {
            lo[i] = self.a[i].min(self.b[i]).min(self.pa[i]).min(self.pb[i]) - m;
            hi[i] = self.a[i].max(self.b[i]).max(self.pa[i]).max(self.pb[i]) + m;
        }
        Aabb::new(lo, hi)
    }
}

impl Sacrum {
    pub fn joint(&self, x: f32) -> &Joint {
        if x >= 0.0 {
            &self.joints[0]
        } else {
            &self.joints[1]
        }
    }

    /// The outline without canal and foramina.
    #[inline]
    pub fn solid(&self, p: V3) -> f32 {
        let [x, y, z] = p;
        let xl = x.abs();
        let s = &self.s;
        let jn = self.joint(x);
        let d_ant = s.y_ant(xl, z) - y;
        let d_post = y - s.y_post(xl, z);
        let d_cap = (z - s.z_top_at(xl)).max(s.z_bottom - z);
        let early = d_ant.max(d_post).max(d_cap);
        if early > 12.0 {
            return early;
        }
        let ex = jn.extra(y, z);
        let d_lat = jn.q(xl, y, z) + jn.h + ex[0];
        let d = smax(smax(d_ant, d_post, 4.0), d_lat, 3.0);
        let d = smax(d, z - s.z_top_at(xl), 3.0);
        d.max(s.z_bottom - z)
    }

    #[inline]
    pub fn canal(&self, p: V3) -> f32 {
        let (yc, w, h) = self.s.canal_centre(p[2]);
        // A rounded triangle: wider at the front.
        let widen = 1.0 + 0.35 * ((yc - p[1]) / h).clamp(-1.0, 1.0);
        ellipse2(p[0], p[1] - yc, w * widen, h)
    }

    pub fn foramina_dist(&self, p: V3) -> f32 {
        self.foramina.iter().fold(1e3, |d, f| d.min(f.dist(p)))
    }
}

impl Field for Sacrum {
    fn dist(&self, p: V3) -> f32 {
        let d = self.solid(p);
        if d > 8.0 {
            return d;
        }
        let d = d.max(-self.canal(p));
        d.max(-self.foramina_dist(p))
    }
    fn bounds(&self) -> Aabb {
        let s = &self.s;
        let w = self.joints.iter().map(|j| j.w[0] + j.w[1].abs() + j.w[2].abs() + 15.0).fold(0.0, f32::max);
        let ya = s.a0 - s.a2 * 4.0 - 5.0;
        let yp = s.a0 + s.t0 + s.t1.abs() * 2.0 + s.crest + 5.0;
        Aabb::new([-w, ya, s.z_bottom], [w, yp, s.z_top + 2.0])
    }
}

/// The L5 vertebral body above the L5-S1 disc (a rounded elliptic cylinder).
pub struct L5Body {
    pub cy: f32,
    pub r: [f32; 2],
    pub z0: f32,
    pub z1: f32,
}

impl Field for L5Body {
    fn dist(&self, p: V3) -> f32 {
        let d = ellipse2(p[0], p[1] - self.cy, self.r[0], self.r[1]);
        smax(d, (self.z0 - p[2]).max(p[2] - self.z1), 2.0)
    }
    fn bounds(&self) -> Aabb {
        Aabb::new([-self.r[0], self.cy - self.r[1], self.z0], [self.r[0], self.cy + self.r[1], self.z1])
    }
}

/// One ilium near the joint: a block along the auricular surface, the wing sweeping
/// anterolaterally, and the posterior pillar to the posterior superior iliac spine.
#[derive(Clone, Debug)]
pub struct IliumShape {
    /// Block thickness lateral to the joint.
    pub t: Lin,
    /// Wing: angle from lateral towards anterior (radians), length, bow, radii (root, middle,
    /// tip); all by level.
    pub wing_angle: Lin,
    pub wing_len: Lin,
    pub wing_bow: f32,
    pub wing_r: [f32; 3],
    /// PSIS: y behind the sacrum's crest, radius, levels where the pillar exists.
    pub psis_dy: f32,
    pub psis_r: f32,
    pub pillar_z: [f32; 2],
    pub z_range: [f32; 2],
}

pub struct Ilium {
    pub joint: Joint,
    pub shape: IliumShape,
    /// The sacrum's posterior surface level (for placing the PSIS behind it).
    pub sacrum: SacrumShape,
    /// The level-dependent parts (wing, pillar, PSIS) tabulated every `TABLE_STEP` mm.
    table: Vec<WingRow>,
}

const TABLE_STEP: f32 = 0.5;

/// The wing polyline (x', y, radius), the pillar's front end, the PSIS (x', y, radius).
type WingParts = ([(f32, f32, f32); 5], (f32, f32), (f32, f32, f32));

#[derive(Clone, Copy, Debug, Default)]
struct WingRow {
    pts: [(f32, f32, f32); 5],
    p0: (f32, f32),
    psis: (f32, f32, f32),
    t: f32,
    ya: f32,
    yp: f32,
}

impl WingRow {
    fn lerp(a: &WingRow, b: &WingRow, u: f32) -> WingRow {
        let l = |x: f32, y: f32| x + (y - x) * u;
        let l3 = |x: (f32, f32, f32), y: (f32, f32, f32)| (l(x.0, y.0), l(x.1, y.1), l(x.2, y.2));
        let mut pts = a.pts;
        for (n, p) in pts.iter_mut().enumerate() {
            *p = l3(a.pts[n], b.pts[n]);
        }
        WingRow {
            pts,
            p0: (l(a.p0.0, b.p0.0), l(a.p0.1, b.p0.1)),
            psis: l3(a.psis, b.psis),
            t: l(a.t, b.t),
            ya: l(a.ya, b.ya),
            yp: l(a.yp, b.yp),
        }
    }
}

impl Ilium {
    pub fn new(joint: Joint, shape: IliumShape, sacrum: SacrumShape) -> Self {
        let mut il = Ilium { joint, shape, sacrum, table: Vec::new() };
        let n = ((il.shape.z_range[1] - il.shape.z_range[0]) / TABLE_STEP).ceil() as usize + 1;
        il.table = (0..n)
            .map(|r| {
                let z = il.shape.z_range[0] + r as f32 * TABLE_STEP;
                let (pts, p0, psis) = il.wing(z);
                WingRow { pts, p0, psis, t: il.shape.t.at(z), ya: il.joint.ya.at(z), yp: il.joint.yp(z) }
            })
            .collect();
        il
    }

    #[inline]
    fn row(&self, z: f32) -> WingRow {
        let u = ((z - self.shape.z_range[0]) / TABLE_STEP).clamp(0.0, (self.table.len() - 1) as f32);
        let r = (u as usize).min(self.table.len().saturating_sub(2));
        WingRow::lerp(&self.table[r], &self.table[r + 1], u - r as f32)
    }

    /// Anchor points of the wing (front of the block) and of the pillar (back of the block), and
    /// the wing polyline in lateral coordinates.
    #[inline]
    fn wing(&self, z: f32) -> WingParts {
        let jn = &self.joint;
        let sh = &self.shape;
        let ex_i = jn.sep(z)[1];
        let ya = jn.ya.at(z);
        let t = sh.t.at(z);
        let (ja, _, _) = jn.j(ya, z);
        let ax = ja + jn.h + ex_i + 0.55 * t;
        let ay = ya + 2.0;
        let phi = sh.wing_angle.at(z);
        let (sn, cs) = phi.sin_cos();
        let len = sh.wing_len.at(z).max(10.0);
        let dir = (cs, -sn);
        let perp = (sn, cs); // towards posterolateral: the outer (gluteal) side
        let p2 = (ax + dir.0 * len, ay + dir.1 * len);
        let c =
            (ax + dir.0 * len * 0.5 + perp.0 * 2.0 * sh.wing_bow, ay + dir.1 * len * 0.5 + perp.1 * 2.0 * sh.wing_bow);
        let mut pts = [(0.0, 0.0, 0.0); 5];
        for (n, pt) in pts.iter_mut().enumerate() {
            let u = n as f32 / 4.0;
            let (a, b, cc) = ((1.0 - u) * (1.0 - u), 2.0 * u * (1.0 - u), u * u);
            let r = if u < 0.5 {
                lerp(sh.wing_r[0], sh.wing_r[1], u * 2.0)
            } else {
                lerp(sh.wing_r[1], sh.wing_r[2], u * 2.0 - 1.0)
            };
            *pt = (a * ax + b * c.0 + cc * p2.0, a * ay + b * c.1 + cc * p2.1, r);
        }
        let yp = jn.yp(z);
        let (jp, _, _) = jn.j(yp, z);
        let pillar0 = (jp + jn.h + ex_i + jn.lig[1] + 0.5 * t, yp);
        let ypsis = self.sacrum.y_post(0.0, z) - self.sacrum.crest + sh.psis_dy;
        let (js, _, _) = jn.j(ypsis, z);
        let rp = sh.psis_r
            * smoothstep(sh.pillar_z[0], sh.pillar_z[0] + 15.0, z)
            * (1.0 - smoothstep(sh.pillar_z[1], sh.pillar_z[1] + 15.0, z));
        let psis = (js + jn.h + ex_i + jn.lig[1] + sh.psis_r * 0.9, ypsis, rp);
        (pts, pillar0, psis)
    }

    /// The wing polyline at level z (lateral coordinates), for placing muscles along it.
    pub fn wing_points(&self, z: f32) -> [(f32, f32, f32); 5] {
        self.wing(z).0
    }

    pub fn psis(&self, z: f32) -> (f32, f32, f32) {
        self.wing(z).2
    }
}

impl Field for Ilium {
    fn dist(&self, p: V3) -> f32 {
        let jn = &self.joint;
        let sh = &self.shape;
        let xl = jn.side.sigma() * p[0];
        let (y, z) = (p[1], p[2]);
        let q = jn.q(xl, y, z);
        let li = jn.h + jn.extra(y, z)[1];
        let d_med = li - q;
        if d_med > 12.0 {
            return d_med;
        }
        let w = self.row(z);
        let (ymid, yhalf) = (0.5 * (w.ya + w.yp), 0.5 * (w.yp - w.ya) + 3.0);
        let d_block = smax(smax(d_med, q - (li + w.t), 2.0), (y - ymid).abs() - yhalf, 0.35 * w.t.min(yhalf));
        let mut d_wing = f32::MAX;
        for k in 0..4 {
            let (a, b) = (w.pts[k], w.pts[k + 1]);
            let (d, u) = segment2(xl, y, a.0, a.1, b.0, b.1);
            d_wing = d_wing.min(d - lerp(a.2, b.2, u));
        }
        let d_pillar = if w.psis.2 > 0.5 {
            let (d, u) = segment2(xl, y, w.p0.0, w.p0.1, w.psis.0, w.psis.1);
            d - lerp(0.5 * w.t, w.psis.2, u)
        } else {
            f32::MAX
        };
        let d = smin(d_block, smin(d_wing, d_pillar, 5.0), 6.0);
        let d = smax(d, d_med, 1.5);
        smax(d, (sh.z_range[0] - z).max(z - sh.z_range[1]), 4.0)
    }
    fn bounds(&self) -> Aabb {
        let jn = &self.joint;
        let sh = &self.shape;
        let (z0, z1) = (sh.z_range[0], sh.z_range[1]);
        let mut lo = [f32::MAX; 2];
        let mut hi = [f32::MIN; 2];
        let mut n = 0;
        while n <= 16 {
            let z = lerp(z0, z1, n as f32 / 16.0);
            let (pts, p0, psis) = self.wing(z);
            let ya = jn.ya.at(z);
            let (ja, _, _) = jn.j(ya, z);
            let mut acc = |x: f32, y: f32, r: f32| {
                lo[0] = lo[0].min(x - r);
                lo[1] = lo[1].min(y - r);
                hi[0] = hi[0].max(x + r);
                hi[1] = hi[1].max(y + r);
            };
            for pt in pts {
                acc(pt.0, pt.1, pt.2 + 3.0);
            }
            acc(p0.0, p0.1, sh.t.at(z) + 4.0);
            acc(psis.0, psis.1, psis.2 + 4.0);
            acc(ja, ya, sh.t.at(z) + 8.0);
            n += 1;
        }
        let (xa, xb) = if jn.side == Side::Left { (lo[0], hi[0]) } else { (-hi[0], -lo[0]) };
        Aabb::new([xa - 8.0, lo[1] - 8.0, z0], [xb + 8.0, hi[1] + 8.0, z1])
    }
}

/// The synovial joint space (cartilage and fluid): drawn before the bones, which leave the gap.
pub struct JointSpace {
    pub joint: Joint,
}

impl Field for JointSpace {
    fn dist(&self, p: V3) -> f32 {
        let jn = &self.joint;
        let xl = jn.side.sigma() * p[0];
        let q = jn.q(xl, p[1], p[2]);
        smax(q.abs() - (jn.h + 1.5), jn.synovial(p[1], p[2]) - 2.0, 2.0)
    }
    fn bounds(&self) -> Aabb {
        joint_box(&self.joint, 4.0, 0.0)
    }
}

/// The interosseous ligament behind the synovial part (fibres and fat).
pub struct Ligament {
    pub joint: Joint,
    pub depth: f32,
}

impl Field for Ligament {
    fn dist(&self, p: V3) -> f32 {
        let jn = &self.joint;
        let xl = jn.side.sigma() * p[0];
        let (y, z) = (p[1], p[2]);
        // Present along the joint's levels, fading out over 12 mm beyond them (no flat caps).
        let fade = smoothstep(jn.z_lo - 12.0, jn.z_lo, z) * (1.0 - smoothstep(jn.z_hi, jn.z_hi + 12.0, z));
        if fade <= 0.0 {
            return 20.0;
        }
        let q = jn.q(xl, y, z);
        let ex = jn.extra(y, z);
        // The gap between the two bones, behind the synovial part.
        let half = (jn.h + (0.5 * (ex[0] + ex[1])).min(8.0) + 2.0) * fade;
        let centre = 0.5 * (ex[1] - ex[0]).clamp(-8.0, 8.0);
        let yp = jn.yp(z);
        let len = self.depth * fade;
        smax((q - centre).abs() - half, (yp - 3.0 - y).max(y - (yp + len)), 3.0)
    }
    fn bounds(&self) -> Aabb {
        joint_box(&self.joint, 16.0, self.depth + 8.0)
    }
}

/// A box around one joint's surface (levels extended by `dz`, posterior by `dy_post`).
pub fn joint_box(jn: &Joint, dz: f32, dy_post: f32) -> Aabb {
    let mut lo = [f32::MAX; 2];
    let mut hi = [f32::MIN; 2];
    let z0 = jn.z_lo - dz;
    let z1 = jn.z_hi + dz;
    for n in 0..=12 {
        let z = lerp(z0, z1, n as f32 / 12.0);
        let ya = jn.ya.at(z) - 6.0;
        let yp = jn.yp(z) + 6.0 + dy_post;
        for y in [ya, yp, 0.5 * (ya + yp)] {
            let (j, _, _) = jn.j(y, z);
            let ex = jn.extra(y, z);
            lo[0] = lo[0].min(j - jn.h - ex[0] - 8.0);
            hi[0] = hi[0].max(j + jn.h + ex[1] + 8.0);
            lo[1] = lo[1].min(y);
            hi[1] = hi[1].max(y);
        }
    }
    let (xa, xb) = if jn.side == Side::Left { (lo[0], hi[0]) } else { (-hi[0], -lo[0]) };
    Aabb::new([xa, lo[1], z0], [xb, hi[1], z1])
}

/// Draws one joint's parameters. `lean` widens/narrows all soft lengths together.
pub fn sample_joint(rng: &mut Rng, side: Side, common: &JointCommon) -> Joint {
    let asym = |rng: &mut Rng, v: f32, a: f32| v + rng.jitter(a);
    let tb_deg = asym(rng, common.beta_deg, 6.0).clamp(8.0, 40.0);
    let tb0 = tb_deg.to_radians().tan();
    let z_lo = asym(rng, common.z_lo, 4.0);
    let z_hi = asym(rng, common.z_hi, 4.0);
    let step = [rng.uniform_f32(9.0, 16.0), rng.uniform_f32(10.0, 20.0)];
    let amp = rng.uniform_f32(0.2, 0.8);
    let bumps = Arc::new(Bumps::new(rng, [-90.0, -160.0], [90.0, 160.0], step, amp));
    Joint {
        side,
        w: [asym(rng, common.w0, 3.0), asym(rng, common.w1, 1.5), asym(rng, common.w2, 1.0)],
        yc: common.ya0 + 4.0,
        tanb: Lin::ab(tb0, asym(rng, common.tanb_slope, 0.05) / 50.0),
        kappa: asym(rng, common.kappa, 0.05),
        bumps,
        h: asym(rng, common.h, 0.25).max(0.6),
        z_lo,
        z_hi,
        ya: Lin::ab(common.ya0 + rng.jitter(2.0), common.ya_slope),
        len: Lin::c(common.len0),
        lig: [rng.uniform_f32(2.0, 5.0), rng.uniform_f32(2.0, 5.0)],
        open: [rng.uniform_f32(5.0, 12.0), rng.uniform_f32(4.0, 9.0)],
        sep_below: [rng.uniform_f32(0.45, 0.9), rng.uniform_f32(0.35, 0.75)],
        sep_above: [rng.uniform_f32(0.1, 0.35), rng.uniform_f32(0.15, 0.45)],
        cortex: [rng.uniform_f32(0.9, 1.5), rng.uniform_f32(1.1, 2.0)],
    }
}

/// Parameters shared by both joints (each side then varies around them).
#[derive(Clone, Debug)]
pub struct JointCommon {
    pub w0: f32,
    pub w1: f32,
    pub w2: f32,
    pub beta_deg: f32,
    pub tanb_slope: f32,
    pub kappa: f32,
    pub h: f32,
    pub z_lo: f32,
    pub z_hi: f32,
    pub ya0: f32,
    pub ya_slope: f32,
    /// Provisional length of the synovial part (refined once the sacrum is drawn).
    pub len0: f32,
}
