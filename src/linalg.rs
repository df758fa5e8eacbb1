//! Small dense matrices in f64: the 3x3 / 4x4 algebra behind affines (NIfTI quaternions,
//! reorientation, MONAI's resampling geometry). Straight loops in a fixed summation order, so
//! results are reproducible and can be matched operation for operation against NumPy where
//! the pipeline needs that (see `pipeline::geometry`).

pub type Mat3 = [[f64; 3]; 3];
pub type Mat4 = [[f64; 4]; 4];

pub const I3: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// `a @ b`, each entry summed left to right (`k = 0, 1, ...`) without fused multiply-add.
pub fn matmul4(a: &Mat4, b: &Mat4) -> Mat4 {
    let mut c = [[0.0; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            let mut acc = 0.0;
            for k in 0..4 {
                acc += a[i][k] * b[k][j];
            }
            c[i][j] = acc;
        }
    }
    c
}

pub fn matmul3(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut c = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            let mut acc = 0.0;
            for k in 0..3 {
                acc += a[i][k] * b[k][j];
            }
            c[i][j] = acc;
        }
    }
    c
}

pub fn transpose3(a: &Mat3) -> Mat3 {
    let mut t = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            t[i][j] = a[j][i];
        }
    }
    t
}

/// The upper-left 3x3 block of an affine.
pub fn linear_part(a: &Mat4) -> Mat3 {
    [[a[0][0], a[0][1], a[0][2]], [a[1][0], a[1][1], a[1][2]], [a[2][0], a[2][1], a[2][2]]]
}

pub fn det3(a: &Mat3) -> f64 {
    a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
}

/// Inverse by the adjugate; `None` when singular or not finite.
pub fn inv3(a: &Mat3) -> Option<Mat3> {
    let d = det3(a);
    if d == 0.0 || !d.is_finite() {
        return None;
    }
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            // cofactor of (j, i)
            let (r0, r1) = ((j + 1) % 3, (j + 2) % 3);
            let (c0, c1) = ((i + 1) % 3, (i + 2) % 3);
            r[i][j] = (a[r0][c0] * a[r1][c1] - a[r0][c1] * a[r1][c0]) / d;
        }
    }
    Some(r)
}

/// Solve `a @ x = b` for a 4x4 system with several right-hand sides: LU factorisation with
/// partial pivoting (the row of largest magnitude, first on ties, as LAPACK's `idamax`),
/// then forward and back substitution. Like OpenBLAS's `getf2`/`trsm` (behind NumPy's
/// `solve` and `inv`), it multiplies by the pivot's reciprocal rather than dividing, which
/// changes last bits: e.g. the inverse of MONAI's `normalize_transform` for size 320 has
/// `159.5` where division gives `159.49999999999997`. `None` when `a` is singular.
pub fn solve4(a: &Mat4, b: &Mat4) -> Option<Mat4> {
    let mut a = *a;
    let mut b = *b;
    for c in 0..4 {
        let mut p = c;
        for r in c + 1..4 {
            if a[r][c].abs() > a[p][c].abs() {
                p = r;
            }
        }
        if a[p][c] == 0.0 || !a[p][c].is_finite() {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        let recip = 1.0 / a[c][c];
        for r in c + 1..4 {
            let f = a[r][c] * recip;
            a[r][c] = f;
            for k in c + 1..4 {
                a[r][k] -= f * a[c][k];
            }
            for k in 0..4 {
                b[r][k] -= f * b[c][k];
            }
        }
    }
    let mut x = [[0.0; 4]; 4];
    for r in (0..4).rev() {
        for k in 0..4 {
            let mut acc = b[r][k];
            for j in r + 1..4 {
                acc -= a[r][j] * x[j][k];
            }
            x[r][k] = acc * (1.0 / a[r][r]);
        }
    }
    if x.iter().flatten().all(|v| v.is_finite()) {
        Some(x)
    } else {
        None
    }
}

/// Inverse of a 4x4 matrix (`solve4(a, I)`).
pub fn inv4(a: &Mat4) -> Option<Mat4> {
    solve4(a, &crate::volume::IDENTITY)
}

/// Orthogonal polar factor of `a` (the orthogonal matrix nearest to it, `U V^T` of its SVD),
/// by Newton's iteration `X <- (X + X^-T) / 2`, which converges quadratically for any
/// non-singular matrix. `None` when `a` is singular.
pub fn polar3(a: &Mat3) -> Option<Mat3> {
    let mut x = *a;
    for _ in 0..100 {
        let inv = inv3(&x)?;
        let mut next = [[0.0; 3]; 3];
        let mut delta: f64 = 0.0;
        for i in 0..3 {
            for j in 0..3 {
                next[i][j] = 0.5 * (x[i][j] + inv[j][i]);
                delta = delta.max((next[i][j] - x[i][j]).abs());
            }
        }
        x = next;
        if delta < 1e-15 {
            break;
        }
    }
    Some(x)
}

/// Cholesky factor `L` (lower triangular, positive diagonal) of a symmetric positive-definite
/// matrix: `a = L L^T`. `None` when `a` is not positive definite.
pub fn cholesky3(a: &Mat3) -> Option<Mat3> {
    let mut l = [[0.0; 3]; 3];
    for j in 0..3 {
        let mut s = a[j][j];
        for k in 0..j {
            s -= l[j][k] * l[j][k];
        }
        if s <= 0.0 || !s.is_finite() {
            return None;
        }
        l[j][j] = s.sqrt();
        for i in j + 1..3 {
            let mut s = a[i][j];
            for k in 0..j {
                s -= l[i][k] * l[j][k];
            }
            l[i][j] = s / l[j][j];
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_and_inverse() {
        let a: Mat4 = [[2.0, 1.0, 0.0, 3.0], [0.5, -1.0, 4.0, 1.0], [0.0, 0.0, 3.0, -2.0], [0.0, 0.0, 0.0, 1.0]];
        let inv = inv4(&a).unwrap();
        let p = matmul4(&a, &inv);
        for i in 0..4 {
            for j in 0..4 {
                let e = if i == j { 1.0 } else { 0.0 };
                assert!((p[i][j] - e).abs() < 1e-14, "{p:?}");
            }
        }
        let sing: Mat4 = [[1.0, 2.0, 0.0, 0.0], [2.0, 4.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]];
        assert!(inv4(&sing).is_none());
    }

    #[test]
    fn polar_of_scaled_rotation_is_the_rotation() {
        let (c, s) = (0.3f64.cos(), 0.3f64.sin());
        let r: Mat3 = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
        // a symmetric positive stretch applied on the right keeps the polar factor
        let stretch: Mat3 = [[2.0, 0.1, 0.0], [0.1, 1.5, 0.2], [0.0, 0.2, 3.0]];
        let q = polar3(&matmul3(&r, &stretch)).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                assert!((q[i][j] - r[i][j]).abs() < 1e-12, "{q:?}");
            }
        }
    }

    #[test]
    fn cholesky_reconstructs() {
        let a: Mat3 = [[4.0, 2.0, 0.4], [2.0, 5.0, 1.0], [0.4, 1.0, 3.0]];
        let l = cholesky3(&a).unwrap();
        let p = matmul3(&l, &transpose3(&l));
        for i in 0..3 {
            for j in 0..3 {
                assert!((p[i][j] - a[i][j]).abs() < 1e-14);
            }
        }
        assert!(cholesky3(&[[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).is_none());
    }
}
