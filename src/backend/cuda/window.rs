//! Sliding-window inference on the device, for the clinical pipeline: windows are cut out of
//! a preprocessed volume into a patch batch (optionally flipped, for test-time augmentation),
//! the network's logits are accumulated with the Gaussian importance map into whole-volume
//! sums, normalised, then turned into probabilities or a label mask. Only the final volume
//! crosses the bus.

use super::kernels as k;
use super::memory::DeviceBuffer;
use super::ops::flip_bits;
use super::params::{Src, WindowParams};
use super::tensor::{check_shape, CudaTensor};
use super::CudaBackend;
use crate::error::{Error, Result};
use crate::tensor::{numel, Dims, HostTensor};

const BLOCK: u32 = 256;

/// An f32 volume `(C, H, W, D)` in PyTorch layout on the device.
pub struct DeviceVolume {
    pub(crate) buf: DeviceBuffer,
    pub c: usize,
    pub dims: Dims,
}

/// Running importance-weighted sums of window logits over a volume.
pub struct Blend {
    acc: DeviceVolume,
    wsum: DeviceBuffer,
}

impl CudaBackend {
    /// Uploads a `(C, H, W, D)` or `(1, C, H, W, D)` f32 volume.
    pub fn upload_volume(&self, v: &HostTensor) -> Result<DeviceVolume> {
        let (c, dims) = match v.shape.as_slice() {
            &[c, h, w, d] | &[1, c, h, w, d] => (c, [h, w, d]),
            s => return Err(Error::Shape(format!("upload_volume: expected (C, H, W, D), got {s:?}"))),
        };
        check_shape("upload_volume", 1, c, dims)?;
        if let Some(i) = v.first_non_finite() {
            return Err(Error::Value(format!("volume element {i} is {}", v.data[i])));
        }
        let buf = self.pool.alloc(v.data.len() * 4)?;
        buf.upload(&v.data)?;
        Ok(DeviceVolume { buf, c, dims })
    }

    /// Downloads a volume as `(C, H, W, D)`.
    pub fn download_volume(&self, v: &DeviceVolume) -> Result<HostTensor> {
        let mut data = vec![0f32; v.c * numel(v.dims)];
        v.buf.download(&mut data)?;
        HostTensor::new(vec![v.c, v.dims[0], v.dims[1], v.dims[2]], data)
    }

    /// A batch of windows of size `roi` cut out of `vol` at `origins`, each optionally flipped
    /// (H, W, D): the network input for one sliding-window step.
    pub fn extract_windows(&self, vol: &DeviceVolume, roi: Dims, origins: &[(Dims, [bool; 3])]) -> Result<CudaTensor> {
        let y = self.new_tensor(origins.len(), vol.c, roi)?;
        self.extract_windows_into(vol, origins, &y, 0)?;
        Ok(y)
    }

    /// As [`CudaBackend::extract_windows`], into samples `first..` of an existing batch (a
    /// batch whose windows come from several volumes).
    pub fn extract_windows_into(
        &self,
        vol: &DeviceVolume,
        origins: &[(Dims, [bool; 3])],
        batch: &CudaTensor,
        first: usize,
    ) -> Result<()> {
        let (n, c, roi) = batch.shape();
        if c != vol.c || first + origins.len() > n || batch.norm.is_some() {
            return Err(Error::Shape(format!(
                "extract_windows: {} windows of a {}-channel volume into samples {first}.. of a batch {:?}",
                origins.len(),
                vol.c,
                batch.shape()
            )));
        }
        for (s, (o, flip)) in origins.iter().enumerate() {
            check_window(vol.dims, roi, *o)?;
            let mut p = window_params(vol.dims, roi, *o, *flip, vol.c, first + s);
            p.acc = vol.buf.ptr();
            p.out = batch.buf.ptr();
            let items = numel(roi) * vol.c;
            self.dev.launch(k::WINDOW_EXTRACT_F16, (self.dev.grid_for(items, BLOCK), 1, 1), (BLOCK, 1, 1), 0, &p)?;
        }
        Ok(())
    }

    /// Replaces the contents of a volume of the same size (ordered on the stream: kernels
    /// queued earlier still read the old contents).
    pub fn overwrite_volume(&self, v: &mut DeviceVolume, data: &[f32]) -> Result<()> {
        if data.len() != v.c * numel(v.dims) {
            return Err(Error::Shape(format!("overwrite_volume: {} values for {}x{:?}", data.len(), v.c, v.dims)));
        }
        v.buf.upload(data)
    }

    /// An empty blend for `c`-channel logits over a volume of size `dims`.
    pub fn new_blend(&self, c: usize, dims: Dims) -> Result<Blend> {
        check_shape("new_blend", 1, c, dims)?;
        let mut acc = self.pool.alloc(c * numel(dims) * 4)?;
        acc.fill_u32(0)?;
        let mut wsum = self.pool.alloc(numel(dims) * 4)?;
        wsum.fill_u32(0)?;
        Ok(Blend { acc: DeviceVolume { buf: acc, c, dims }, wsum })
    }

    /// Adds sample `i` of `logits` (a window at `origins[i]`, computed on an input flipped as
    /// given there, which is undone here) weighted by `importance` (a 1-channel volume of the
    /// window's size) to the blend.
    pub fn accumulate_windows(
        &self,
        blend: &mut Blend,
        logits: &CudaTensor,
        importance: &DeviceVolume,
        origins: &[(Dims, [bool; 3])],
    ) -> Result<()> {
        let (n, c, roi) = logits.shape();
        if origins.len() != n || c != blend.acc.c || importance.dims != roi || importance.c != 1 {
            return Err(Error::Shape(format!(
                "accumulate_windows: {} origins, logits {:?}, importance {}x{:?}, blend of {} channels",
                origins.len(),
                logits.shape(),
                importance.c,
                importance.dims,
                blend.acc.c
            )));
        }
        for (s, (o, flip)) in origins.iter().enumerate() {
            self.accumulate_window(blend, logits, s, importance, *o, *flip)?;
        }
        Ok(())
    }

    /// Adds sample `sample` of `logits` at `origin` (see [`CudaBackend::accumulate_windows`]).
    pub fn accumulate_window(
        &self,
        blend: &mut Blend,
        logits: &CudaTensor,
        sample: usize,
        importance: &DeviceVolume,
        origin: Dims,
        flip: [bool; 3],
    ) -> Result<()> {
        let (n, c, roi) = logits.shape();
        if sample >= n || c != blend.acc.c || importance.dims != roi || importance.c != 1 {
            return Err(Error::Shape(format!(
                "accumulate_window: sample {sample} of logits {:?}, importance {}x{:?}, blend of {} channels",
                logits.shape(),
                importance.c,
                importance.dims,
                blend.acc.c
            )));
        }
        check_window(blend.acc.dims, roi, origin)?;
        let mut p = window_params(blend.acc.dims, roi, origin, flip, c, sample);
        p.patch = logits.src();
        p.weight = importance.buf.ptr();
        p.acc = blend.acc.buf.ptr();
        p.wsum = blend.wsum.ptr();
        self.dev.launch(k::WINDOW_ACCUMULATE_F32, (self.dev.grid_for(numel(roi), BLOCK), 1, 1), (BLOCK, 1, 1), 0, &p)
    }

    /// The blended logits: weighted sums divided by the summed weights.
    pub fn finish_blend(&self, blend: Blend) -> Result<DeviceVolume> {
        let Blend { acc, wsum } = blend;
        let mut p = window_params(acc.dims, acc.dims, [0; 3], [false; 3], acc.c, 0);
        p.acc = acc.buf.ptr();
        p.wsum = wsum.ptr();
        let items = acc.c * numel(acc.dims);
        self.dev.launch(k::WINDOW_NORMALISE_F32, (self.dev.grid_for(items, BLOCK), 1, 1), (BLOCK, 1, 1), 0, &p)?;
        Ok(acc)
    }

    /// In-place softmax over the channels.
    pub fn softmax_volume(&self, v: &mut DeviceVolume) -> Result<()> {
        let mut p = window_params(v.dims, v.dims, [0; 3], [false; 3], v.c, 0);
        p.acc = v.buf.ptr();
        self.dev.launch(k::SOFTMAX_F32, (self.dev.grid_for(numel(v.dims), BLOCK), 1, 1), (BLOCK, 1, 1), 0, &p)
    }

    /// Label of the largest channel per voxel, `(H, W, D)` row-major.
    pub fn argmax_volume(&self, v: &DeviceVolume) -> Result<Vec<u8>> {
        let mask = self.pool.alloc(numel(v.dims))?;
        let mut p = window_params(v.dims, v.dims, [0; 3], [false; 3], v.c, 0);
        p.acc = v.buf.ptr();
        p.mask = mask.ptr();
        self.dev.launch(k::ARGMAX_U8, (self.dev.grid_for(numel(v.dims), BLOCK), 1, 1), (BLOCK, 1, 1), 0, &p)?;
        let mut out = vec![0u8; numel(v.dims)];
        mask.download(&mut out)?;
        Ok(out)
    }
}

fn check_window(vol: Dims, roi: Dims, o: Dims) -> Result<()> {
    if (0..3).any(|i| o[i] + roi[i] > vol[i]) {
        return Err(Error::Shape(format!("window at {o:?} of size {roi:?} does not fit a volume of size {vol:?}")));
    }
    Ok(())
}

fn window_params(vol: Dims, roi: Dims, o: Dims, flip: [bool; 3], c: usize, sample: usize) -> WindowParams {
    WindowParams {
        patch: Src::default(),
        sample: sample as i32,
        c: c as i32,
        h: vol[0] as i32,
        w: vol[1] as i32,
        d: vol[2] as i32,
        ph: roi[0] as i32,
        pw: roi[1] as i32,
        pd: roi[2] as i32,
        oh: o[0] as i32,
        ow: o[1] as i32,
        od: o[2] as i32,
        flip: flip_bits(flip),
        ..Default::default()
    }
}
