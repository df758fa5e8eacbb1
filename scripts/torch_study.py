"""The reference's inference on a preprocessed volume, in PyTorch: MONAI's sliding window and the
reference's test-time augmentation + fold ensemble, as fmseg runs them (src/pipeline/window.rs,
src/pipeline/tta.rs). Used by the PyTorch baseline's study timing (scripts/gpu_bench_torch.py
--study) and checked by scripts/torch_parity.py against MONAI's own output (pipeline_case1).

Everything stays on the model's device; a `predict(batch) -> logits` callable takes
(B, 1, H, W, D) windows and returns (B, C, H, W, D) logits (any float dtype; blended in float32).
"""
import torch
import torch.nn.functional as F

# The reference's SlidingWindowInferer settings.
ROI = (192, 192, 16)
OVERLAP = 0.5
SIGMA_SCALE = 0.125
SW_BATCH = 2
# RandGaussianNoised(prob=1, std=0.01) per TTA round; 4 rounds of (noised, flip H, flip W).
TTA_ROUNDS = 4
NOISE_STD = 0.01


def scan_interval(image, roi, overlap):
    """MONAI's `_get_scan_interval`: roi where it equals the image, else int(roi * (1 - overlap))."""
    return tuple(r if r == s else max(int(r * (1 - overlap)), 1) for s, r in zip(image, roi))


def windows(image, roi, overlap):
    """Window starts in MONAI's order (`dense_patch_slices`: row-major over the per-axis starts,
    the last start clamped to size - roi); `image >= roi` on every axis."""
    per_axis = []
    for s, r, step in zip(image, roi, scan_interval(image, roi, overlap)):
        count = next((d + 1 for d in range(-(-s // step)) if d * step + r >= s), 1)
        per_axis.append([min(d * step, s - r) for d in range(count)])
    return [(a, b, c) for a in per_axis[0] for b in per_axis[1] for c in per_axis[2]]


def importance_map(roi, sigma_scale=SIGMA_SCALE, device=None):
    """MONAI's Gaussian `compute_importance_map`, float32: the outer product of
    exp(x^2 / (-2 sigma^2)) on x = -(n-1)/2 .. (n-1)/2, sigma = sigma_scale * n, not normalised,
    clamped below at max(min, 1e-3)."""
    m = None
    for n in roi:
        sigma = n * sigma_scale
        x = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=torch.float32, device=device)
        g = torch.exp(x ** 2 / (-2 * sigma ** 2))
        m = g if m is None else m.unsqueeze(-1) * g
    return m.clamp(min=max(float(m.min()), 1e-3))


def sliding_window(image, predict, roi=ROI, overlap=OVERLAP, sigma_scale=SIGMA_SCALE, sw_batch=SW_BATCH,
                   wmap=None):
    """Blended logits (1, C, H, W, D), float32, of a single-channel (H, W, D) image.

    An axis shorter than the roi is replicate-padded to it (the reference's padding mode; diff // 2
    before) and cropped back. Windows go to `predict` `sw_batch` at a time in MONAI's order; each
    output times the importance map is added in that order, then divided by the summed map.
    `wmap` may pass a precomputed importance map (it depends only on roi and sigma_scale)."""
    if image.dim() != 3:
        raise ValueError(f"sliding_window: image must be (H, W, D), got {tuple(image.shape)}")
    if sw_batch < 1 or not 0 <= overlap < 1 or min(roi) < 1:
        raise ValueError(f"sliding_window: roi {roi} > 0, sw_batch {sw_batch} >= 1, overlap {overlap} in [0, 1)")
    dims = tuple(image.shape)
    pad = [(max(r - s, 0) // 2, max(r - s, 0) - max(r - s, 0) // 2) for s, r in zip(dims, roi)]
    img = image
    if any(a + b for a, b in pad):
        flat = [v for p in reversed(pad) for v in p]
        img = F.pad(image[None, None], flat, mode="replicate")[0, 0]
    pdims = tuple(img.shape)
    if wmap is None:
        wmap = importance_map(roi, sigma_scale, device=image.device)
    wins = windows(pdims, roi, overlap)
    (r0, r1, r2) = roi
    out = None
    count = torch.zeros(pdims, dtype=torch.float32, device=image.device)
    for i in range(0, len(wins), sw_batch):
        chunk = wins[i:i + sw_batch]
        batch = torch.stack([img[a:a + r0, b:b + r1, c:c + r2] for a, b, c in chunk])[:, None]
        y = predict(batch)
        if y.dim() != 5 or y.shape[0] != len(chunk) or tuple(y.shape[2:]) != tuple(roi):
            raise ValueError(f"model returned {tuple(y.shape)} for {len(chunk)} windows of {roi}")
        if out is None:
            out = torch.zeros((y.shape[1],) + pdims, dtype=torch.float32, device=image.device)
        for k, (a, b, c) in enumerate(chunk):
            out[:, a:a + r0, b:b + r1, c:c + r2] += y[k].float() * wmap
            count[a:a + r0, b:b + r1, c:c + r2] += wmap
    out /= count
    (h0, _), (w0, _), (d0, _) = pad
    return out[None, :, h0:h0 + dims[0], w0:w0 + dims[1], d0:d0 + dims[2]]


def tta_ensemble(image, predictors, rounds=TTA_ROUNDS, noise_std=NOISE_STD, generator=None, **window):
    """Mean raw logits (1, C, H, W, D) of a fold ensemble with the reference's test-time
    augmentation: per predictor, the plain pass, then `rounds` x (noised, noised flipped along H,
    noised flipped along W; flipped outputs flipped back), every pass's logits summed in float32 in
    that order and divided by the number of passes (1 + 3 rounds per predictor). The noise is
    MONAI's RandGaussianNoise law (std drawn uniformly from [0, noise_std) per round, then normal
    noise), drawn on the image's device from `generator` without a host synchronisation.
    `window` goes to sliding_window."""
    if not predictors:
        raise ValueError("tta_ensemble: no predictors")
    if "wmap" not in window:
        window["wmap"] = importance_map(window.get("roi", ROI), window.get("sigma_scale", SIGMA_SCALE),
                                        device=image.device)
    dev = image.device
    total = None
    passes = 0

    def add(y):
        nonlocal total, passes
        total = y if total is None else total.add_(y)
        passes += 1

    for predict in predictors:
        add(sliding_window(image, predict, **window))
        for _ in range(rounds):
            std = torch.rand((), generator=generator, device=dev) * noise_std
            noised = image + torch.randn(image.shape, generator=generator, device=dev) * std
            add(sliding_window(noised, predict, **window))
            for axis in (0, 1):
                y = sliding_window(noised.flip(axis), predict, **window)
                add(y.flip(axis + 2))
    return total / passes, passes
