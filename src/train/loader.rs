//! Batches of augmented patches, prepared on background CPU threads while the training step
//! runs.
//!
//! As the reference's `monai.data.DataLoader(batch_size=2, shuffle=True)` over a dataset whose
//! transform yields 3 crops per volume: each epoch visits the training volumes once in a
//! shuffled order, takes them `volumes_per_batch` at a time, and a batch holds all their crops
//! (MONAI's `list_data_collate` flattens them): `N = volumes x crops = 6` patches by default,
//! volume-major (`[v0c0, v0c1, v0c2, v1c0, ...]`). The last batch of an epoch may have fewer
//! volumes (`drop_last = false`, as the reference) unless `drop_last` is set.
//!
//! Determinism: the epoch's order comes from a ChaCha20 stream keyed by `(seed, epoch)` and
//! each volume's patches from [`crate::train::augment::volume_rng`]`(seed, epoch, case index)`,
//! so the batches of an epoch are the same bytes whatever the number of worker threads.
//! Workers take batches round-robin (batch `b` to worker `b % workers`), each through its own
//! bounded channel of depth `prefetch`, and the consumer reads them back in order.
//! Preprocessed volumes are cached in the [`Dataset`] after their first load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{Error, Result};
use crate::tensor::{numel, HostTensor};
use crate::train::augment::{augment, AugmentConfig, PatchInfo};
use crate::train::data::Dataset;

/// How batches are made.
#[derive(Clone, Debug, PartialEq)]
pub struct LoaderConfig {
    /// Volumes per batch (the reference's `batch_size`); each gives `augment.crops` patches.
    pub volumes_per_batch: usize,
    /// Background threads preparing batches.
    pub workers: usize,
    /// Batches each worker may hold ready ahead of the consumer.
    pub prefetch: usize,
    /// Seed of the epoch order and of the augmentation.
    pub seed: u64,
    /// Shuffle the volumes every epoch (else dataset order).
    pub shuffle: bool,
    /// Drop a last batch with fewer volumes.
    pub drop_last: bool,
    pub augment: AugmentConfig,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            volumes_per_batch: 2,
            workers: 4,
            prefetch: 2,
            seed: 0,
            shuffle: true,
            drop_last: false,
            augment: AugmentConfig::default(),
        }
    }
}

/// Where one patch of a batch came from.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchOrigin {
    /// Index of the case in the [`Dataset`].
    pub case: usize,
    pub id: String,
    pub info: PatchInfo,
}

/// One training batch in PyTorch layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `(N, 1, H, W, D)` z-scored images, row-major, last axis fastest.
    pub image: HostTensor,
    /// `(N, 1, H, W, D)` 0/1 labels in the same layout.
    pub label: Vec<u8>,
    pub epoch: u64,
    /// Position of this batch in its epoch.
    pub index: usize,
    /// One entry per patch, in batch order.
    pub patches: Vec<PatchOrigin>,
}

impl Batch {
    /// Number of patches `N`.
    pub fn len(&self) -> usize {
        self.patches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patches.is_empty()
    }

    /// The label as a float tensor of the image's shape (the reference casts it to float32).
    pub fn label_f32(&self) -> HostTensor {
        HostTensor { shape: self.image.shape.clone(), data: self.label.iter().map(|&v| v as f32).collect() }
    }
}

/// Makes the batches of each epoch over a subset of a [`Dataset`] (e.g. one fold's training
/// cases).
pub struct Loader {
    dataset: Arc<Dataset>,
    cases: Vec<usize>,
    cfg: LoaderConfig,
}

impl Loader {
    /// A loader over `cases` (indices into `dataset`).
    pub fn new(dataset: Arc<Dataset>, cases: Vec<usize>, cfg: LoaderConfig) -> Result<Self> {
        cfg.augment.validate()?;
        if cases.is_empty() {
            return Err(Error::Value("the loader has no cases to train on".into()));
        }
        if let Some(&c) = cases.iter().find(|&&c| c >= dataset.len()) {
            return Err(Error::Value(format!("case index {c} is out of range (the dataset has {})", dataset.len())));
        }
        if cfg.volumes_per_batch == 0 || cfg.workers == 0 || cfg.prefetch == 0 {
            return Err(Error::Value(format!(
                "loader: volumes per batch ({}), workers ({}) and prefetch ({}) must all be at least 1",
                cfg.volumes_per_batch, cfg.workers, cfg.prefetch
            )));
        }
        if cfg.drop_last && cases.len() < cfg.volumes_per_batch {
            return Err(Error::Value(format!(
                "loader: {} case(s) make no full batch of {} volumes and drop_last is set",
                cases.len(),
                cfg.volumes_per_batch
            )));
        }
        Ok(Loader { dataset, cases, cfg })
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.cases.len(), self.cfg.volumes_per_batch);
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The case indices of each batch of `epoch`, in order.
    pub fn plan(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut order = self.cases.clone();
        if self.cfg.shuffle {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&self.cfg.seed.to_le_bytes());
            key[8..16].copy_from_slice(&epoch.to_le_bytes());
            key[24..].copy_from_slice(b"fmsegord");
            let mut rng = ChaCha20Rng::from_seed(key);
            for i in (1..order.len()).rev() {
                let j = rng.random_range(0..=i);
                order.swap(i, j);
            }
        }
        let mut batches: Vec<Vec<usize>> = order.chunks(self.cfg.volumes_per_batch).map(|c| c.to_vec()).collect();
        batches.truncate(self.batches_per_epoch());
        batches
    }

    /// Start preparing the batches of `epoch` on background threads. Dropping the returned
    /// iterator stops and joins them.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        let plan = Arc::new(self.plan(epoch));
        let total = plan.len();
        let workers = self.cfg.workers.min(total.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel::<Result<Batch>>(self.cfg.prefetch);
            receivers.push(rx);
            let (plan, ds, cfg, halt) = (plan.clone(), self.dataset.clone(), self.cfg.clone(), stop.clone());
            let spawned = std::thread::Builder::new().name(format!("fmseg-loader-{w}")).spawn(move || {
                for b in (w..plan.len()).step_by(workers) {
                    if halt.load(Ordering::Relaxed) {
                        break;
                    }
                    let batch = make_batch(&ds, &plan[b], &cfg, epoch, b);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            });
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Epoch {
                        receivers: Vec::new(),
                        handles,
                        stop,
                        next: 0,
                        total,
                        error: Some(Error::Other(format!("cannot start a data loader thread: {e}"))),
                    };
                }
            }
        }
        Epoch { receivers, handles, stop, next: 0, total, error: None }
    }
}

/// Load, augment and stack the volumes of one batch.
pub fn make_batch(ds: &Dataset, cases: &[usize], cfg: &LoaderConfig, epoch: u64, index: usize) -> Result<Batch> {
    let p = cfg.augment.patch;
    let per = numel(p);
    let n = cases.len() * cfg.augment.crops;
    let mut image = Vec::with_capacity(n * per);
    let mut label = Vec::with_capacity(n * per);
    let mut patches = Vec::with_capacity(n);
    for &c in cases {
        let s = ds.sample(c)?;
        for patch in augment(&s, &cfg.augment, cfg.seed, epoch, c as u64)? {
            image.extend_from_slice(&patch.image);
            label.extend_from_slice(&patch.label);
            patches.push(PatchOrigin { case: c, id: s.id.clone(), info: patch.info });
        }
    }
    Ok(Batch { image: HostTensor::new(vec![n, 1, p[0], p[1], p[2]], image)?, label, epoch, index, patches })
}

/// The batches of one epoch, in order; stops at the first error (after yielding it).
pub struct Epoch {
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    next: usize,
    total: usize,
    error: Option<Error>,
}

impl Epoch {
    /// Batches in this epoch.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.error.take() {
            self.next = self.total;
            return Some(Err(e));
        }
        if self.next >= self.total || self.receivers.is_empty() {
            return None;
        }
        let w = self.next % self.receivers.len();
        self.next += 1;
        match self.receivers[w].recv() {
            Ok(Ok(b)) => Some(Ok(b)),
            Ok(Err(e)) => {
                self.next = self.total;
                Some(Err(e))
            }
            Err(_) => {
                self.next = self.total;
                Some(Err(Error::Other("a data loader thread stopped unexpectedly".into())))
            }
        }
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // dropping the receivers unblocks workers waiting to send
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
