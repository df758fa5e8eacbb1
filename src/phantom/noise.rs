//! Smooth random fields for textures (marrow, muscle marbling, fat) and the confounders' shapes:
//! a periodic 32^3 lattice of random values, sampled with C1 (smoothstep-weighted trilinear)
//! interpolation. A lookup is eight cached loads, cheap enough to run per voxel; each texture
//! reads the lattice through its own scale and offset, so textures do not correlate.

use super::rng::Rng;

const N: usize = 32;
const MASK: i32 = (N - 1) as i32;
const SHIFT: f32 = (N * 64) as f32;

pub struct Lattice {
    v: Vec<f32>,
}

impl Lattice {
    /// Values uniform in `[-1, 1]`.
    pub fn new(rng: &mut Rng) -> Self {
        let v = (0..N * N * N).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
        Lattice { v }
    }

    #[inline]
    fn at(&self, x: i32, y: i32, z: i32) -> f32 {
        self.v[(((x & MASK) as usize * N) + (y & MASK) as usize) * N + (z & MASK) as usize]
    }

    /// Value noise at `p` in lattice units, in `[-1, 1]`, period 32.
    #[inline]
    pub fn sample(&self, p: [f32; 3]) -> f32 {
        // Shift by a multiple of the period so truncation is the floor (fast, and the same
        // value: the lattice is periodic); inputs stay far below the shift in practice.
        let q = [p[0] + SHIFT, p[1] + SHIFT, p[2] + SHIFT];
        let (x, y, z) = (q[0] as i32, q[1] as i32, q[2] as i32);
        let (fx, fy, fz) = (x as f32, y as f32, z as f32);
        let p = q;
        let s = |t: f32| t * t * (3.0 - 2.0 * t);
        let (u, v, w) = (s(p[0] - fx), s(p[1] - fy), s(p[2] - fz));
        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = lerp(self.at(x, y, z), self.at(x + 1, y, z), u);
        let c10 = lerp(self.at(x, y + 1, z), self.at(x + 1, y + 1, z), u);
        let c01 = lerp(self.at(x, y, z + 1), self.at(x + 1, y, z + 1), u);
        let c11 = lerp(self.at(x, y + 1, z + 1), self.at(x + 1, y + 1, z + 1), u);
        lerp(lerp(c00, c10, v), lerp(c01, c11, v), w)
    }
}

/// One texture channel: the lattice read at `(R p + offset) / scale` (per-axis scale in mm,
/// so a texture can be stretched, e.g. muscle fibres along the body axis). Isotropic textures
/// get a random rotation `R`, which hides the lattice's axes.
#[derive(Clone, Copy, Debug)]
pub struct Texture {
    pub inv_scale: [f32; 3],
    pub offset: [f32; 3],
    /// Rows of `R` already divided by the scale of their axis.
    rot: [[f32; 3]; 3],
}

impl Texture {
    /// Axis-aligned (no rotation), for stretched textures.
    pub fn new(rng: &mut Rng, scale: [f32; 3]) -> Self {
        let inv_scale = [1.0 / scale[0], 1.0 / scale[1], 1.0 / scale[2]];
        let mut rot = [[0.0; 3]; 3];
        for a in 0..3 {
            rot[a][a] = inv_scale[a];
        }
        Texture {
            inv_scale,
            offset: [rng.uniform_f32(0.0, 32.0), rng.uniform_f32(0.0, 32.0), rng.uniform_f32(0.0, 32.0)],
            rot,
        }
    }

    /// Isotropic, randomly rotated.
    pub fn isotropic(rng: &mut Rng, scale: f32) -> Self {
        let mut t = Self::new(rng, [scale; 3]);
        // A random rotation from a random unit quaternion.
        let q = loop {
            let q = [rng.jitter(1.0), rng.jitter(1.0), rng.jitter(1.0), rng.jitter(1.0)];
            let n = q.iter().map(|v| v * v).sum::<f32>().sqrt();
            if n > 0.1 && n <= 1.0 {
                break q.map(|v| v / n);
            }
        };
        let [w, x, y, z] = q;
        let r = [
            [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - w * z), 2.0 * (x * z + w * y)],
            [2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - w * x)],
            [2.0 * (x * z - w * y), 2.0 * (y * z + w * x), 1.0 - 2.0 * (x * x + y * y)],
        ];
        t.rot = r.map(|row| row.map(|v| v / scale));
        t
    }

    #[inline]
    fn coords(&self, p: [f32; 3]) -> [f32; 3] {
        let r = &self.rot;
        [
            r[0][0] * p[0] + r[0][1] * p[1] + r[0][2] * p[2] + self.offset[0],
            r[1][0] * p[0] + r[1][1] * p[1] + r[1][2] * p[2] + self.offset[1],
            r[2][0] * p[0] + r[2][1] * p[1] + r[2][2] * p[2] + self.offset[2],
        ]
    }

    #[inline]
    pub fn at(&self, l: &Lattice, p: [f32; 3]) -> f32 {
        l.sample(self.coords(p))
    }

    /// Two octaves (this scale and half of it, weight 0.5), in about `[-1, 1]`.
    #[inline]
    pub fn fbm2(&self, l: &Lattice, p: [f32; 3]) -> f32 {
        let c = self.coords(p);
        let a = l.sample(c);
        // The second octave reads the lattice with the axes permuted (decorrelated).
        let q = [c[1] * 2.03 + 7.1, c[2] * 2.03 + 3.3, c[0] * 2.03 + 5.7];
        (a + 0.5 * l.sample(q)) * (1.0 / 1.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattice_is_continuous_bounded_and_periodic() {
        let mut r = Rng::new(1, 1);
        let l = Lattice::new(&mut r);
        let mut prev = l.sample([0.0, 0.5, 0.5]);
        for i in 1..2000 {
            let x = i as f32 * 0.01;
            let v = l.sample([x, 0.5, 0.5]);
            assert!(v.abs() <= 1.0);
            assert!((v - prev).abs() < 0.05, "jump at {x}");
            prev = v;
        }
        let a = l.sample([1.3, 2.7, 5.1]);
        let b = l.sample([1.3 + 32.0, 2.7 - 32.0, 5.1 + 64.0]);
        assert!((a - b).abs() < 1e-5);
    }
}

/// A smooth random height field over a rectangle (irregularities of a joint surface), with
/// its derivatives: random values on a lattice, C1 (smoothstep-weighted) interpolation.
#[derive(Clone, Debug)]
pub struct Bumps {
    v: Vec<f32>,
    n: [usize; 2],
    origin: [f32; 2],
    step: [f32; 2],
}

impl Bumps {
    /// Heights with standard deviation `amp` on a lattice of `step` over `[lo, hi]`.
    pub fn new(rng: &mut Rng, lo: [f32; 2], hi: [f32; 2], step: [f32; 2], amp: f32) -> Self {
        let n = [0, 1].map(|a| ((hi[a] - lo[a]) / step[a]).ceil() as usize + 2);
        let v = (0..n[0] * n[1]).map(|_| rng.normal(0.0, amp as f64) as f32).collect();
        Bumps { v, n, origin: lo, step }
    }

    /// Height only (cheaper than [`Bumps::at`]).
    #[inline]
    pub fn height(&self, a: f32, b: f32) -> f32 {
        let u = ((a - self.origin[0]) / self.step[0]).clamp(0.0, (self.n[0] - 2) as f32);
        let w = ((b - self.origin[1]) / self.step[1]).clamp(0.0, (self.n[1] - 2) as f32);
        let (iu, iw) = ((u as usize).min(self.n[0] - 2), (w as usize).min(self.n[1] - 2));
        let (fu, fw) = (u - iu as f32, w - iw as f32);
        let (su, sw) = (fu * fu * (3.0 - 2.0 * fu), fw * fw * (3.0 - 2.0 * fw));
        let r0 = iu * self.n[1] + iw;
        let r1 = r0 + self.n[1];
        let a0 = self.v[r0] + (self.v[r0 + 1] - self.v[r0]) * sw;
        let a1 = self.v[r1] + (self.v[r1 + 1] - self.v[r1]) * sw;
        a0 + (a1 - a0) * su
    }

    /// Height and its derivatives along both coordinates (clamped outside the rectangle).
    #[inline]
    pub fn at(&self, a: f32, b: f32) -> (f32, f32, f32) {
        let u = ((a - self.origin[0]) / self.step[0]).clamp(0.0, (self.n[0] - 2) as f32);
        let w = ((b - self.origin[1]) / self.step[1]).clamp(0.0, (self.n[1] - 2) as f32);
        let (iu, iw) = ((u as usize).min(self.n[0] - 2), (w as usize).min(self.n[1] - 2));
        let (fu, fw) = (u - iu as f32, w - iw as f32);
        let s = |t: f32| t * t * (3.0 - 2.0 * t);
        let ds = |t: f32| 6.0 * t * (1.0 - t);
        let at = |x: usize, y: usize| self.v[x * self.n[1] + y];
        let (v00, v01, v10, v11) = (at(iu, iw), at(iu, iw + 1), at(iu + 1, iw), at(iu + 1, iw + 1));
        let (su, sw) = (s(fu), s(fw));
        let a0 = v00 + (v01 - v00) * sw;
        let a1 = v10 + (v11 - v10) * sw;
        let h = a0 + (a1 - a0) * su;
        let dh_du = (a1 - a0) * ds(fu) / self.step[0];
        let b0 = v00 + (v10 - v00) * su;
        let b1 = v01 + (v11 - v01) * su;
        let dh_dw = (b1 - b0) * ds(fw) / self.step[1];
        (h, dh_du, dh_dw)
    }
}

#[cfg(test)]
mod bump_tests {
    use super::*;

    #[test]
    fn bump_derivatives_match_differences() {
        let mut r = Rng::new(5, 5);
        let b = Bumps::new(&mut r, [-50.0, -80.0], [50.0, 80.0], [12.0, 16.0], 1.0);
        for &(a, c) in &[(3.3f32, 7.1f32), (-20.0, 40.5), (33.0, -61.0)] {
            let (h, da, dc) = b.at(a, c);
            assert!((h - b.height(a, c)).abs() < 1e-6);
            let e = 1e-2;
            let na = (b.at(a + e, c).0 - b.at(a - e, c).0) / (2.0 * e);
            let nc = (b.at(a, c + e).0 - b.at(a, c - e).0) / (2.0 * e);
            assert!((da - na).abs() < 1e-2 && (dc - nc).abs() < 1e-2, "{da} {na} {dc} {nc}");
        }
    }
}
