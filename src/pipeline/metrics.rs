//! Validation metrics of a binary segmentation, as the reference computes them with MONAI 0.9
//! (`validation.py`: `DiceMetric(include_background=False)` and
//! `ConfusionMatrixMetric(include_background=False, metric_name="precision" / "recall")`):
//!
//! - Dice per volume is `2 TP / (2 TP + FP + FN)` over the foreground class. A volume whose
//!   label has no foreground has *no* Dice (MONAI's `ignore_empty=True` gives NaN) and is left
//!   out of the mean; the mean over a set where no volume has foreground is 0 (MONAI's
//!   `do_metric_reduction` of an all-NaN buffer).
//! - Precision `TP / (TP + FP)` and recall `TP / (TP + FN)` are *pooled* over the set: the
//!   confusion counts are reduced first (`compute_sample=False`) and the ratio taken once, so a
//!   volume weighs by its voxel counts. A ratio with a zero denominator (no predicted voxel at
//!   all, no labelled voxel at all) has no value (MONAI: NaN).
//!
//! Per-volume precision and recall use the same zero-denominator convention.

use crate::error::{Error, Result};

/// Voxel counts of one volume: prediction vs label, foreground = any non-zero value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
    pub tn: u64,
}

impl Confusion {
    /// Counts of `pred` against `label` (same length, voxel for voxel; non-zero is foreground).
    pub fn from_masks(pred: &[u8], label: &[u8]) -> Result<Self> {
        if pred.len() != label.len() {
            return Err(Error::Shape(format!(
                "metrics: prediction has {} voxels, label has {}",
                pred.len(),
                label.len()
            )));
        }
        let mut c = Confusion::default();
        for (&p, &l) in pred.iter().zip(label) {
            match (p != 0, l != 0) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        Ok(c)
    }

    /// Dice of the foreground; `None` when the label has no foreground (left out of means).
    /// An empty prediction on a non-empty label is 0.
    pub fn dice(&self) -> Option<f64> {
        let label = self.tp + self.fn_;
        (label > 0).then(|| 2.0 * self.tp as f64 / (2 * self.tp + self.fp + self.fn_) as f64)
    }

    /// `TP / (TP + FP)`; `None` when nothing is predicted.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// `TP / (TP + FN)`; `None` when the label is empty.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Element-wise sum (pooling two volumes' counts).
    pub fn add(&self, o: &Confusion) -> Confusion {
        Confusion { tp: self.tp + o.tp, fp: self.fp + o.fp, fn_: self.fn_ + o.fn_, tn: self.tn + o.tn }
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// The validation summary the training loop records per epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Mean Dice over the volumes whose label has foreground; 0 when none has (MONAI).
    pub mean_dice: f64,
    /// How many volumes entered `mean_dice`.
    pub dice_volumes: usize,
    /// Pooled precision; `None` when no voxel of any volume was predicted.
    pub precision: Option<f64>,
    /// Pooled recall; `None` when no volume has labelled voxels.
    pub recall: Option<f64>,
    /// Number of volumes summarised.
    pub volumes: usize,
}

impl Summary {
    /// Summary of per-volume counts (see the module docs for the conventions).
    pub fn of(volumes: &[Confusion]) -> Self {
        let dices: Vec<f64> = volumes.iter().filter_map(|c| c.dice()).collect();
        let mean_dice = if dices.is_empty() { 0.0 } else { dices.iter().sum::<f64>() / dices.len() as f64 };
        let pooled = volumes.iter().fold(Confusion::default(), |a, c| a.add(c));
        Summary {
            mean_dice,
            dice_volumes: dices.len(),
            precision: pooled.precision(),
            recall: pooled.recall(),
            volumes: volumes.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ratios() {
        let pred = [1, 1, 0, 0, 1, 0, 2, 0];
        let label = [1, 0, 1, 0, 1, 0, 1, 1];
        let c = Confusion::from_masks(&pred, &label).unwrap();
        assert_eq!(c, Confusion { tp: 3, fp: 1, fn_: 2, tn: 2 });
        assert_eq!(c.dice(), Some(6.0 / 9.0));
        assert_eq!(c.precision(), Some(0.75));
        assert_eq!(c.recall(), Some(0.6));
        let e = Confusion::from_masks(&pred, &label[..7]).unwrap_err().to_string();
        assert!(e.contains("8 voxels") && e.contains("7"), "{e}");
    }

    #[test]
    fn empty_set_conventions() {
        let both_empty = Confusion::from_masks(&[0, 0, 0], &[0, 0, 0]).unwrap();
        assert_eq!((both_empty.dice(), both_empty.precision(), both_empty.recall()), (None, None, None));
        let false_alarm = Confusion::from_masks(&[1, 0, 0], &[0, 0, 0]).unwrap();
        assert_eq!((false_alarm.dice(), false_alarm.precision(), false_alarm.recall()), (None, Some(0.0), None));
        let missed = Confusion::from_masks(&[0, 0, 0], &[0, 1, 1]).unwrap();
        assert_eq!((missed.dice(), missed.precision(), missed.recall()), (Some(0.0), None, Some(0.0)));
        let perfect = Confusion::from_masks(&[0, 1, 1], &[0, 1, 1]).unwrap();
        assert_eq!((perfect.dice(), perfect.precision(), perfect.recall()), (Some(1.0), Some(1.0), Some(1.0)));
    }

    #[test]
    fn summary_means_dice_and_pools_precision_recall() {
        // volume A: tp 1 fp 3 fn 0 (dice 2/5); volume B: tp 4 fp 0 fn 4 (dice 8/12);
        // volume C: empty label with a false alarm (no dice, adds fp 2).
        let a = Confusion { tp: 1, fp: 3, fn_: 0, tn: 10 };
        let b = Confusion { tp: 4, fp: 0, fn_: 4, tn: 10 };
        let c = Confusion { tp: 0, fp: 2, fn_: 0, tn: 10 };
        let s = Summary::of(&[a, b, c]);
        assert_eq!(s.dice_volumes, 2);
        assert_eq!(s.volumes, 3);
        assert_eq!(s.mean_dice, (2.0 / 5.0 + 8.0 / 12.0) / 2.0);
        // pooled: tp 5, fp 5, fn 4 -- not the mean of per-volume ratios (0.25, 1.0, 0.0)
        assert_eq!(s.precision, Some(0.5));
        assert_eq!(s.recall, Some(5.0 / 9.0));
        // nothing labelled anywhere, nothing predicted: MONAI's 0 mean and NaN ratios
        let none = Summary::of(&[Confusion { tn: 5, ..Default::default() }]);
        assert_eq!((none.mean_dice, none.dice_volumes, none.precision, none.recall), (0.0, 0, None, None));
        assert_eq!(Summary::of(&[]).volumes, 0);
    }
}
