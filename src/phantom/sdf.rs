//! Implicit shapes: approximate signed distances in millimetres (negative inside) in the pelvis
//! frame (x to the patient's left, y posterior, z along the sacral axis towards the head).
//! The renderer only needs the zero set and a distance that grows about linearly away from it
//! (it measures the local slope itself), so cheap approximations (ellipses, smooth unions)
//! are fine; thicknesses (cortex, skin, vessel walls) are offsets of these distances.

pub type V3 = [f32; 3];

/// Axis-aligned box in the pelvis frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aabb {
    pub lo: V3,
    pub hi: V3,
}

impl Aabb {
    pub fn new(lo: V3, hi: V3) -> Self {
        Aabb { lo, hi }
    }
    pub fn around(c: V3, r: V3) -> Self {
        Aabb { lo: [c[0] - r[0], c[1] - r[1], c[2] - r[2]], hi: [c[0] + r[0], c[1] + r[1], c[2] + r[2]] }
    }
    pub fn union(&self, o: &Aabb) -> Aabb {
        Aabb {
            lo: [self.lo[0].min(o.lo[0]), self.lo[1].min(o.lo[1]), self.lo[2].min(o.lo[2])],
            hi: [self.hi[0].max(o.hi[0]), self.hi[1].max(o.hi[1]), self.hi[2].max(o.hi[2])],
        }
    }
    pub fn intersect(&self, o: &Aabb) -> Aabb {
        Aabb {
            lo: [self.lo[0].max(o.lo[0]), self.lo[1].max(o.lo[1]), self.lo[2].max(o.lo[2])],
            hi: [self.hi[0].min(o.hi[0]), self.hi[1].min(o.hi[1]), self.hi[2].min(o.hi[2])],
        }
    }
    pub fn grow(&self, m: f32) -> Aabb {
        Aabb {
            lo: [self.lo[0] - m, self.lo[1] - m, self.lo[2] - m],
            hi: [self.hi[0] + m, self.hi[1] + m, self.hi[2] + m],
        }
    }
    pub fn is_empty(&self) -> bool {
        (0..3).any(|a| self.lo[a] > self.hi[a])
    }
    pub fn corners(&self) -> [V3; 8] {
        let (l, h) = (self.lo, self.hi);
        [
            [l[0], l[1], l[2]],
            [h[0], l[1], l[2]],
            [l[0], h[1], l[2]],
            [h[0], h[1], l[2]],
            [l[0], l[1], h[2]],
            [h[0], l[1], h[2]],
            [l[0], h[1], h[2]],
            [h[0], h[1], h[2]],
        ]
    }
    pub fn contains(&self, p: V3) -> bool {
        (0..3).all(|a| p[a] >= self.lo[a] && p[a] <= self.hi[a])
    }
}

/// A shape: signed distance and a box that holds it (the renderer evaluates it only there).
pub trait Field: Send + Sync {
    fn dist(&self, p: V3) -> f32;
    fn bounds(&self) -> Aabb;
}

#[inline]
pub fn clamp01(x: f32) -> f32 {
    x.clamp(0.0, 1.0)
}

#[inline]
pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = clamp01((x - e0) / (e1 - e0));
    t * t * (3.0 - 2.0 * t)
}

#[inline]
pub fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Polynomial smooth minimum (union with a fillet of radius about `k`); the exact minimum
/// where the two differ by `k` or more (so a huge "absent" value is harmless).
#[inline]
pub fn smin(a: f32, b: f32, k: f32) -> f32 {
    let diff = b - a;
    if k <= 0.0 || diff >= k {
        return a.min(b);
    }
    if -diff >= k {
        return b;
    }
    let h = 0.5 + 0.5 * diff / k;
    a * h + b * (1.0 - h) - k * h * (1.0 - h)
}

/// Smooth maximum (intersection with rounded edges).
#[inline]
pub fn smax(a: f32, b: f32, k: f32) -> f32 {
    -smin(-a, -b, k)
}

/// Approximate distance to an axis-aligned ellipse with semi-axes `rx, ry` (exact on the
/// boundary's normal direction to first order).
#[inline]
pub fn ellipse2(px: f32, py: f32, rx: f32, ry: f32) -> f32 {
    let k0 = ((px / rx).powi(2) + (py / ry).powi(2)).sqrt();
    let k1 = ((px / (rx * rx)).powi(2) + (py / (ry * ry)).powi(2)).sqrt();
    if k1 < 1e-12 {
        return -rx.min(ry);
    }
    k0 * (k0 - 1.0) / k1
}

/// Approximate distance to an axis-aligned ellipsoid.
#[inline]
pub fn ellipsoid3(p: V3, r: V3) -> f32 {
    let k0 = ((p[0] / r[0]).powi(2) + (p[1] / r[1]).powi(2) + (p[2] / r[2]).powi(2)).sqrt();
    let k1 = ((p[0] / (r[0] * r[0])).powi(2) + (p[1] / (r[1] * r[1])).powi(2) + (p[2] / (r[2] * r[2])).powi(2)).sqrt();
    if k1 < 1e-12 {
        return -r[0].min(r[1]).min(r[2]);
    }
    k0 * (k0 - 1.0) / k1
}

/// Distance from `p` to segment `ab` in 2-D and the segment parameter of the nearest point.
#[inline]
pub fn segment2(px: f32, py: f32, ax: f32, ay: f32, bx: f32, by: f32) -> (f32, f32) {
    let (ex, ey) = (bx - ax, by - ay);
    let (wx, wy) = (px - ax, py - ay);
    let l2 = ex * ex + ey * ey;
    let t = if l2 > 0.0 { clamp01((wx * ex + wy * ey) / l2) } else { 0.0 };
    let (dx, dy) = (wx - ex * t, wy - ey * t);
    ((dx * dx + dy * dy).sqrt(), t)
}

/// Distance from `p` to segment `ab` in 3-D and the segment parameter of the nearest point.
#[inline]
pub fn segment3(p: V3, a: V3, b: V3) -> (f32, f32) {
    let e = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let w = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
    let l2 = e[0] * e[0] + e[1] * e[1] + e[2] * e[2];
    let t = if l2 > 0.0 { clamp01((w[0] * e[0] + w[1] * e[1] + w[2] * e[2]) / l2) } else { 0.0 };
    let d = [w[0] - e[0] * t, w[1] - e[1] * t, w[2] - e[2] * t];
    ((d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt(), t)
}

/// A value that varies smoothly along the body axis: `a + b * z + c * z^2`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lin {
    pub a: f32,
    pub b: f32,
    pub c: f32,
}

impl Lin {
    pub const fn c(a: f32) -> Self {
        Lin { a, b: 0.0, c: 0.0 }
    }
    pub const fn ab(a: f32, b: f32) -> Self {
        Lin { a, b, c: 0.0 }
    }
    /// The value `v0` at `z0` and `v1` at `z1`, linear.
    pub fn through(z0: f32, v0: f32, z1: f32, v1: f32) -> Self {
        let b = (v1 - v0) / (z1 - z0);
        Lin { a: v0 - b * z0, b, c: 0.0 }
    }
    /// The parabola through three points.
    pub fn through3(z: [f32; 3], v: [f32; 3]) -> Self {
        let (z0, z1, z2) = (z[0] as f64, z[1] as f64, z[2] as f64);
        let (v0, v1, v2) = (v[0] as f64, v[1] as f64, v[2] as f64);
        let d01 = (v1 - v0) / (z1 - z0);
        let d12 = (v2 - v1) / (z2 - z1);
        let c = (d12 - d01) / (z2 - z0);
        let b = d01 - c * (z0 + z1);
        let a = v0 - b * z0 - c * z0 * z0;
        Lin { a: a as f32, b: b as f32, c: c as f32 }
    }
    #[inline]
    pub fn at(&self, z: f32) -> f32 {
        self.a + (self.b + self.c * z) * z
    }
    /// The extreme values over `[z0, z1]`.
    pub fn range(&self, z0: f32, z1: f32) -> (f32, f32) {
        let (u, v) = (self.at(z0), self.at(z1));
        let (mut lo, mut hi) = (u.min(v), u.max(v));
        if self.c != 0.0 {
            let zs = -self.b / (2.0 * self.c);
            if zs > z0 && zs < z1 {
                lo = lo.min(self.at(zs));
                hi = hi.max(self.at(zs));
            }
        }
        (lo, hi)
    }
}

/// A tube through 2-D points that move linearly with z, with a radius per point, extruded
/// along z over `[z0, z1]` with rounded ends: muscles, iliac wings, the body wall.
pub struct Stroke {
    pub pts: Vec<(Lin, Lin, Lin)>,
    pub z0: f32,
    pub z1: f32,
    pub end_round: f32,
}

impl Stroke {
    pub fn new(pts: Vec<(Lin, Lin, Lin)>, z0: f32, z1: f32) -> Self {
        Stroke { pts, z0, z1, end_round: 6.0 }
    }

    #[inline]
    pub fn dist2(&self, x: f32, y: f32, z: f32) -> f32 {
        let mut best = f32::MAX;
        let mut prev = (self.pts[0].0.at(z), self.pts[0].1.at(z), self.pts[0].2.at(z));
        for q in &self.pts[1..] {
            let cur = (q.0.at(z), q.1.at(z), q.2.at(z));
            let (d, t) = segment2(x, y, prev.0, prev.1, cur.0, cur.1);
            let r = lerp(prev.2, cur.2, t);
            best = best.min(d - r);
            prev = cur;
        }
        best
    }
}

impl Field for Stroke {
    fn dist(&self, p: V3) -> f32 {
        let d2 = self.dist2(p[0], p[1], p[2]);
        let dz = (self.z0 - p[2]).max(p[2] - self.z1);
        smax(d2, dz, self.end_round)
    }
    fn bounds(&self) -> Aabb {
        let mut b = Aabb::new([f32::MAX; 3], [f32::MIN; 3]);
        for (x, y, r) in &self.pts {
            let (x0, x1) = x.range(self.z0, self.z1);
            let (y0, y1) = y.range(self.z0, self.z1);
            let (_, r1) = r.range(self.z0, self.z1);
            b = b.union(&Aabb::new([x0 - r1, y0 - r1, self.z0], [x1 + r1, y1 + r1, self.z1]));
        }
        b
    }
}

/// An ellipse whose centre and semi-axes move with z, rotated by `angle` (radians) in
/// the x-y plane, extruded over `[z0, z1]`.
#[derive(Clone, Debug)]
pub struct EllipseZ {
    pub cx: Lin,
    pub cy: Lin,
    pub rx: Lin,
    pub ry: Lin,
    pub angle: f32,
    pub z0: f32,
    pub z1: f32,
    pub end_round: f32,
}

impl EllipseZ {
    #[inline]
    pub fn dist2(&self, x: f32, y: f32, z: f32) -> f32 {
        let (dx, dy) = (x - self.cx.at(z), y - self.cy.at(z));
        let (s, c) = self.angle.sin_cos();
        let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
        ellipse2(u, v, self.rx.at(z).max(0.5), self.ry.at(z).max(0.5))
    }
}

impl Field for EllipseZ {
    fn dist(&self, p: V3) -> f32 {
        let d2 = self.dist2(p[0], p[1], p[2]);
        let dz = (self.z0 - p[2]).max(p[2] - self.z1);
        smax(d2, dz, self.end_round)
    }
    fn bounds(&self) -> Aabb {
        let (x0, x1) = self.cx.range(self.z0, self.z1);
        let (y0, y1) = self.cy.range(self.z0, self.z1);
        let r = self.rx.range(self.z0, self.z1).1.max(self.ry.range(self.z0, self.z1).1);
        Aabb::new([x0 - r, y0 - r, self.z0], [x1 + r, y1 + r, self.z1])
    }
}

/// A 3-D capsule (segment with radius): vessels, nerve roots, bowel loops, foramina.
pub struct Capsule {
    pub a: V3,
    pub b: V3,
    pub r: f32,
}

impl Field for Capsule {
    fn dist(&self, p: V3) -> f32 {
        segment3(p, self.a, self.b).0 - self.r
    }
    fn bounds(&self) -> Aabb {
        let lo = [0, 1, 2].map(|i| self.a[i].min(self.b[i]) - self.r);
        let hi = [0, 1, 2].map(|i| self.a[i].max(self.b[i]) + self.r);
        Aabb::new(lo, hi)
    }
}

/// An oriented ellipsoid: `axes` are the unit directions of its three radii.
pub struct Ellipsoid {
    pub c: V3,
    pub axes: [V3; 3],
    pub r: V3,
}

impl Ellipsoid {
    #[inline]
    pub fn local(&self, p: V3) -> V3 {
        let d = [p[0] - self.c[0], p[1] - self.c[1], p[2] - self.c[2]];
        self.axes.map(|a| a[0] * d[0] + a[1] * d[1] + a[2] * d[2])
    }
}

impl Field for Ellipsoid {
    fn dist(&self, p: V3) -> f32 {
        ellipsoid3(self.local(p), self.r)
    }
    fn bounds(&self) -> Aabb {
        let m = self.r[0].max(self.r[1]).max(self.r[2]);
        Aabb::around(self.c, [m; 3])
    }
}

/// The intersection of two shapes (`a` inside `b`).
pub struct Intersect<A, B> {
    pub a: A,
    pub b: B,
}

impl<A: Field, B: Field> Field for Intersect<A, B> {
    fn dist(&self, p: V3) -> f32 {
        self.a.dist(p).max(self.b.dist(p))
    }
    fn bounds(&self) -> Aabb {
        self.a.bounds().intersect(&self.b.bounds())
    }
}

impl<T: Field + ?Sized> Field for std::sync::Arc<T> {
    fn dist(&self, p: V3) -> f32 {
        (**self).dist(p)
    }
    fn bounds(&self) -> Aabb {
        (**self).bounds()
    }
}

impl<T: Field + ?Sized> Field for Box<T> {
    fn dist(&self, p: V3) -> f32 {
        (**self).dist(p)
    }
    fn bounds(&self) -> Aabb {
        (**self).bounds()
    }
}

/// Rotation taking the unit vector `u` to an orthonormal frame `(u, v, w)`.
pub fn frame_from(u: V3) -> [V3; 3] {
    let n = norm(u);
    let u = [u[0] / n, u[1] / n, u[2] / n];
    let helper = if u[2].abs() < 0.9 { [0.0, 0.0, 1.0] } else { [1.0, 0.0, 0.0] };
    let v = normalize(cross(u, helper));
    let w = cross(u, v);
    [u, v, w]
}

pub fn cross(a: V3, b: V3) -> V3 {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

pub fn norm(a: V3) -> f32 {
    (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt()
}

pub fn normalize(a: V3) -> V3 {
    let n = norm(a).max(1e-12);
    [a[0] / n, a[1] / n, a[2] / n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipse_distance_is_exact_on_the_axes_near_the_boundary() {
        assert!((ellipse2(12.0, 0.0, 10.0, 5.0) - 2.0).abs() < 0.1);
        assert!((ellipse2(0.0, 4.0, 10.0, 5.0) + 1.0).abs() < 0.1);
        assert!(ellipse2(0.0, 0.0, 10.0, 5.0) < 0.0);
        assert!((ellipsoid3([0.0, 0.0, 7.0], [3.0, 4.0, 6.0]) - 1.0).abs() < 0.05);
    }

    #[test]
    fn smooth_min_max_bound_the_hard_ones() {
        for &(a, b) in &[(1.0f32, 2.0f32), (-3.0, 0.5), (0.2, 0.25)] {
            assert!(smin(a, b, 2.0) <= a.min(b) + 1e-6);
            assert!(smax(a, b, 2.0) >= a.max(b) - 1e-6);
            assert_eq!(smin(a, b, 0.0), a.min(b));
        }
        // An absent part (a huge distance) must not disturb the other.
        assert_eq!(smin(3.0, f32::MAX, 5.0), 3.0);
        assert_eq!(smax(-3.0, f32::MIN, 5.0), -3.0);
    }

    #[test]
    fn stroke_is_a_capsule_for_two_points() {
        let s = Stroke::new(
            vec![(Lin::c(0.0), Lin::c(0.0), Lin::c(2.0)), (Lin::c(10.0), Lin::c(0.0), Lin::c(2.0))],
            -50.0,
            50.0,
        );
        assert!((s.dist([5.0, 3.0, 0.0]) - 1.0).abs() < 1e-5);
        assert!((s.dist([-3.0, 0.0, 0.0]) - 1.0).abs() < 1e-5);
        assert!(s.dist([5.0, 0.0, 0.0]) < 0.0);
        let b = s.bounds();
        assert!(b.contains([5.0, 1.9, 49.0]) && !b.contains([5.0, 0.0, 51.0]));
    }

    #[test]
    fn lin_through_two_points() {
        let l = Lin::through(-10.0, 3.0, 10.0, 7.0);
        assert!((l.at(0.0) - 5.0).abs() < 1e-6 && (l.at(10.0) - 7.0).abs() < 1e-6);
        let q = Lin::through3([-50.0, 0.0, 50.0], [4.0, 9.0, 2.0]);
        for (z, v) in [(-50.0, 4.0), (0.0, 9.0), (50.0, 2.0)] {
            assert!((q.at(z) - v).abs() < 1e-4);
        }
        let (lo, hi) = q.range(-50.0, 50.0);
        assert!(lo == 2.0 && hi >= 9.0);
    }
}
