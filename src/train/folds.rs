//! k-fold cross-validation splits exactly as the reference makes them.
//!
//! The reference (`main.py` of hust-linyi/2.5D-AttentionUNet) builds its case list from
//! `sorted(glob("*_MRI.nii.gz"))` and hands it to MONAI's `CrossValidation(nfolds=4,
//! seed=12345)`, which calls `partition_dataset(data, num_partitions=4, shuffle=True,
//! seed=12345)`: the indices `0..n` are shuffled by `np.random.RandomState(12345).shuffle`,
//! and partition `p` is every k-th shuffled index starting at `p` (`indices[p::k]`, no padding,
//! so sizes differ by at most one). Fold `f` validates on partition `f` and trains on the
//! other partitions concatenated in partition order (`select_cross_validation_folds`).
//!
//! NumPy's legacy `RandomState` is MT19937 seeded by `init_genrand`, and its `shuffle` of a
//! list is Fisher-Yates from the top, drawing `j` in `0..=i` by masked rejection sampling on
//! 32-bit outputs (`random_interval`); [`Mt19937`] and [`numpy_shuffle`] reproduce both, so
//! the same case list gives the reference's folds index for index.

use crate::error::{Error, Result};

/// The seed the reference passes to `CrossValidation`.
pub const REFERENCE_FOLD_SEED: u32 = 12345;

/// The Mersenne Twister MT19937 (32-bit), as NumPy's legacy `RandomState` runs it.
pub struct Mt19937 {
    mt: [u32; 624],
    idx: usize,
}

impl Mt19937 {
    /// `init_genrand(seed)` (NumPy: `RandomState(seed)` for an integer seed).
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            mt[i] = 1812433253u32.wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_add(i as u32);
        }
        Mt19937 { mt, idx: 624 }
    }

    /// `genrand_int32`.
    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            for i in 0..624 {
                let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
                if y & 1 == 1 {
                    v ^= 0x9908_b0df;
                }
                self.mt[i] = v;
            }
            self.idx = 0;
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// NumPy's `random_interval(max)`: uniform in `0..=max` by masked rejection.
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }
}

/// `np.random.RandomState(seed).shuffle(list(range(n)))`.
pub fn numpy_shuffle(n: usize, seed: u32) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut rng = Mt19937::new(seed);
    for i in (1..n).rev() {
        let j = rng.interval(i as u32) as usize;
        v.swap(i, j);
    }
    v
}

/// The reference's split of `n` cases into `k` folds for validating on fold `fold`, with the
/// reference's seed: `(train, val)` as indices into the (sorted) case list. See the module
/// docs for the exact rule.
pub fn folds(n: usize, k: usize, fold: usize) -> Result<(Vec<usize>, Vec<usize>)> {
    folds_with_seed(n, k, fold, REFERENCE_FOLD_SEED)
}

/// [`folds`] with another shuffle seed.
pub fn folds_with_seed(n: usize, k: usize, fold: usize, seed: u32) -> Result<(Vec<usize>, Vec<usize>)> {
    if k < 2 {
        return Err(Error::Value(format!("--folds {k}: cross-validation needs at least 2 folds")));
    }
    if n < k {
        return Err(Error::Value(format!("--folds {k}: the dataset has only {n} case(s), fewer than the folds")));
    }
    if n > u32::MAX as usize {
        return Err(Error::Value(format!("{n} cases is more than the fold split supports")));
    }
    if fold >= k {
        return Err(Error::Value(format!("--fold {fold} is out of range: with --folds {k} it must be 0..={}", k - 1)));
    }
    let order = numpy_shuffle(n, seed);
    let part = |p: usize| order.iter().skip(p).step_by(k).copied();
    let val: Vec<usize> = part(fold).collect();
    let train: Vec<usize> = (0..k).filter(|&p| p != fold).flat_map(part).collect();
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_numpy() {
        // np.random.RandomState(12345).randint(0, 2**32, size=3, dtype=np.uint64) draws one
        // 32-bit output per value: [3992670690, 3823185381, 1358822685]
        let mut r = Mt19937::new(12345);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], [3992670690, 3823185381, 1358822685]);
    }

    #[test]
    fn shuffle_matches_numpy() {
        // idx = list(range(n)); np.random.RandomState(seed).shuffle(idx)   (NumPy 2.4.6)
        assert_eq!(numpy_shuffle(1, 12345), vec![0]);
        assert_eq!(numpy_shuffle(2, 12345), vec![1, 0]);
        assert_eq!(numpy_shuffle(5, 12345), vec![0, 4, 3, 1, 2]);
        assert_eq!(numpy_shuffle(7, 12345), vec![6, 3, 4, 0, 1, 5, 2]);
        assert_eq!(numpy_shuffle(10, 0), vec![2, 8, 4, 9, 1, 6, 7, 3, 0, 5]);
        #[rustfmt::skip]
        let want103 = vec![20, 33, 79, 51, 28, 70, 44, 9, 76, 58, 78, 87, 45, 4, 74, 13, 62, 42, 25, 37, 67, 94,
            66, 49, 88, 8, 52, 48, 57, 47, 2, 6, 40, 72, 54, 35, 30, 39, 60, 26, 0, 17, 84, 21, 90, 46, 18, 97, 50,
            22, 75, 86, 89, 85, 32, 24, 83, 27, 16, 63, 69, 12, 19, 93, 65, 68, 53, 96, 71, 92, 15, 5, 3, 64, 102,
            61, 31, 55, 56, 95, 23, 43, 7, 38, 82, 81, 10, 77, 11, 73, 80, 91, 14, 59, 99, 100, 34, 41, 36, 1, 29,
            101, 98];
        assert_eq!(numpy_shuffle(103, 12345), want103);
    }
}
