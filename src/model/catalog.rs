//! Every parameter of the 2.5D-AttentionUNet, named and shaped exactly as the reference's
//! `state_dict()` writes them, in file order. Loaders check a checkpoint against this list;
//! savers write in this order so PyTorch's `load_state_dict(strict=True)` accepts the file.

use crate::backend::{ConvSpec, ConvTSpec};
use crate::tensor::Dims;

/// Feature widths of the published network.
pub const FEATURES: [usize; 6] = [32, 32, 64, 128, 256, 32];
/// Patch used for training crops and sliding windows (H, W, D).
pub const PATCH: Dims = [192, 192, 16];
/// Smallest input the network accepts: the context block pools by 12, 12 and 8 at H/16, W/16, D/2.
pub const MIN_INPUT: Dims = [192, 192, 16];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Conv(ConvSpec),
    ConvT(ConvTSpec),
}

/// One learnable layer: its key prefix and kind. `alias_of` names the prefix of the module it
/// shares storage with (`up_4.attention` is `attention_3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub prefix: String,
    pub kind: LayerKind,
    pub alias_of: Option<String>,
}

impl Layer {
    /// `(key, shape)` of each of its tensors.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        match self.kind {
            LayerKind::Conv(s) => {
                let mut v = vec![(format!("{}.weight", self.prefix), s.weight_shape())];
                if s.bias {
                    v.push((format!("{}.bias", self.prefix), vec![s.cout]));
                }
                v
            }
            LayerKind::ConvT(s) => vec![
                (format!("{}.weight", self.prefix), s.weight_shape()),
                (format!("{}.bias", self.prefix), vec![s.cout]),
            ],
        }
    }
}

const K331: Dims = [3, 3, 1];
const K113: Dims = [1, 1, 3];
const K333: Dims = [3, 3, 3];
const K111: Dims = [1, 1, 1];

fn conv(out: &mut Vec<Layer>, prefix: String, cin: usize, cout: usize, k: Dims, bias: bool) {
    out.push(Layer { prefix, kind: LayerKind::Conv(ConvSpec { cin, cout, k, bias }), alias_of: None });
}

fn encoder(out: &mut Vec<Layer>, p: &str, cin: usize, cout: usize, k: Dims) {
    conv(out, format!("{p}.conv1.0.block.0"), cin, cout, k, true);
    conv(out, format!("{p}.conv1.1.block.0"), cout, cout, k, true);
    conv(out, format!("{p}.conv2.0.block.0"), cout, cout, k, true);
    conv(out, format!("{p}.conv2.1.block.0"), cout, cout, k, true);
    conv(out, format!("{p}.conv3"), cin, cout, K111, true);
}

fn spatial_attention(out: &mut Vec<Layer>, p: &str, c: usize) {
    conv(out, format!("{p}.conv1.0"), c, c / 2, [3, 1, 1], true);
    conv(out, format!("{p}.conv1.3"), c / 2, 1, [1, 3, 1], true);
    conv(out, format!("{p}.conv2.0"), c, c / 2, [1, 3, 1], true);
    conv(out, format!("{p}.conv2.3"), c / 2, 1, [3, 1, 1], true);
}

fn channel_attention(out: &mut Vec<Layer>, p: &str, c: usize) {
    conv(out, format!("{p}.conv.0.block.0"), c, c / 4, K333, true);
    conv(out, format!("{p}.conv.1.block.0"), c / 4, c, K333, true);
}

fn decoder(out: &mut Vec<Layer>, p: &str, c: usize) {
    conv(out, format!("{p}.conv1.0.block.0"), c, c, K331, true);
    conv(out, format!("{p}.conv1.1.block.0"), c, c, K113, true);
    conv(out, format!("{p}.conv2"), c, c, K111, true);
}

fn context_block(out: &mut Vec<Layer>, p: &str, c: usize) {
    let i = c / 4;
    conv(out, format!("{p}.trans_layer.block.0"), c, i, K111, true);
    conv(out, format!("{p}.conv1_1.block.0"), i, i, K111, true);
    conv(out, format!("{p}.conv1_2.block.0"), i, i, K111, true);
    for n in 0..3 {
        conv(out, format!("{p}.conv2_{n}.block.0"), i, i, K333, true);
    }
    conv(out, format!("{p}.conv2_3.block.0"), i, i, [1, 3, 3], true);
    conv(out, format!("{p}.conv2_4.block.0"), i, i, [3, 1, 3], true);
    conv(out, format!("{p}.conv2_5.block.0"), i, i, K331, true);
    conv(out, format!("{p}.conv2_6.block.0"), i, i, K333, true);
    conv(out, format!("{p}.conv2_7.block.0"), i, i, K333, true);
    conv(out, format!("{p}.conv3.block.0"), 2 * i, i, K111, true);
    conv(out, format!("{p}.score_layer.0.block.0"), i, i, K333, true);
    conv(out, format!("{p}.score_layer.1"), i, c, K111, false);
}

fn conv_t(out: &mut Vec<Layer>, prefix: String, cin: usize, cout: usize, k: Dims) {
    out.push(Layer { prefix, kind: LayerKind::ConvT(ConvTSpec { cin, cout, k }), alias_of: None });
}

/// Copies of the layers under `of`, renamed to `as_prefix` and marked as aliases.
fn alias(out: &mut Vec<Layer>, of: &str, as_prefix: &str) {
    let copies: Vec<Layer> = out
        .iter()
        .filter(|l| l.alias_of.is_none() && l.prefix.starts_with(&format!("{of}.")))
        .map(|l| Layer {
            prefix: format!("{as_prefix}{}", &l.prefix[of.len()..]),
            kind: l.kind,
            alias_of: Some(l.prefix.clone()),
        })
        .collect();
    out.extend(copies);
}

/// The whole network's layers in the reference's `state_dict()` order, aliases included.
pub fn layers() -> Vec<Layer> {
    let f = FEATURES;
    let mut v = Vec::new();
    encoder(&mut v, "conv_0", 1, f[0], K331);
    spatial_attention(&mut v, "attention_0", f[0]);
    encoder(&mut v, "down_1.down.1", f[0], f[1], K331);
    spatial_attention(&mut v, "attention_1", f[1]);
    encoder(&mut v, "down_2.down.1", f[1], f[2], K331);
    spatial_attention(&mut v, "attention_2", f[2]);
    encoder(&mut v, "down_3.down.1", f[2], f[3], K333);
    channel_attention(&mut v, "attention_3", f[3]);
    encoder(&mut v, "down_4.down.1", f[3], f[4], K333);
    context_block(&mut v, "context_block_1", f[4]);
    channel_attention(&mut v, "attention_4", f[4]);
    // up_4 registers its decoder before its attention; the other Up stages the other way round.
    conv_t(&mut v, "up_4.up".into(), f[4], f[4] / 2, [2, 2, 2]);
    decoder(&mut v, "up_4.convs", f[3]);
    alias(&mut v, "attention_3", "up_4.attention");
    for (stage, cin, cout, att) in [(3, f[3], f[2], 2), (2, f[2], f[1], 1), (1, f[1], f[5], 0)] {
        let cup = if stage == 1 { cin } else { cin / 2 };
        conv_t(&mut v, format!("up_{stage}.up"), cin, cup, [2, 2, 1]);
        alias(&mut v, &format!("attention_{att}"), &format!("up_{stage}.attention"));
        decoder(&mut v, &format!("up_{stage}.convs"), cout);
    }
    conv(&mut v, "final_conv".into(), f[5], 2, K111, true);
    v
}

/// Every `(key, shape)` in file order, aliases included.
pub fn tensor_keys() -> Vec<(String, Vec<usize>)> {
    layers().iter().flat_map(|l| l.tensors()).collect()
}

/// Number of distinct learnable values (aliases counted once).
pub fn parameter_count() -> usize {
    layers()
        .iter()
        .filter(|l| l.alias_of.is_none())
        .flat_map(|l| l.tensors())
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

/// Spatial sizes at each encoder level for an input of `dims` (floor pooling).
pub fn level_dims(dims: Dims) -> [Dims; 5] {
    let l0 = dims;
    let l1 = [l0[0] / 2, l0[1] / 2, l0[2]];
    let l2 = [l1[0] / 2, l1[1] / 2, l1[2]];
    let l3 = [l2[0] / 2, l2[1] / 2, l2[2]];
    let l4 = [l3[0] / 2, l3[1] / 2, l3[2] / 2];
    [l0, l1, l2, l3, l4]
}

/// Floating-point operations (2 per multiply-add) of one forward pass over an input of `dims`,
/// counting convolutions and transposed convolutions (everything else is memory-bound).
pub fn forward_flops(dims: Dims) -> f64 {
    let l = level_dims(dims);
    let half = |d: Dims| [d[0] / 2, d[1] / 2, d[2] / 2];
    let quarter = |d: Dims| [d[0] / 4, d[1] / 4, d[2] / 4];
    let vox = |d: Dims| (d[0] * d[1] * d[2]) as f64;
    let mut total = 0.0;
    for layer in layers().iter().filter(|l| l.alias_of.is_none()) {
        let p = layer.prefix.as_str();
        let level = |name: &str| -> usize {
            match name {
                "conv_0" | "attention_0" | "final_conv" | "up_1" => 0,
                "down_1" | "attention_1" | "up_2" => 1,
                "down_2" | "attention_2" | "up_3" => 2,
                "down_3" | "attention_3" | "up_4" => 3,
                _ => 4,
            }
        };
        let top = p.split('.').next().unwrap_or(p);
        let at = match top {
            "attention_3" | "attention_4" => half(l[level(top)]),
            "context_block_1" => {
                let b = l[4];
                match p.split('.').nth(1).unwrap_or("") {
                    "conv2_1" => half(b),
                    "conv2_2" => quarter(b),
                    "conv2_3" => [b[0] / 12, b[1], b[2]],
                    "conv2_4" => [b[0], b[1] / 12, b[2]],
                    "conv2_5" => [b[0], b[1], b[2] / 8],
                    _ => b,
                }
            }
            // A transposed conv is counted per input voxel: its input is one level down.
            _ if p.ends_with(".up") => l[level(top) + 1],
            _ => l[level(top)],
        };
        total += match layer.kind {
            LayerKind::Conv(s) => 2.0 * vox(at) * (s.cin * s.cout * s.taps()) as f64,
            LayerKind::ConvT(s) => 2.0 * vox(at) * (s.cin * s.cout * s.k.iter().product::<usize>()) as f64,
        };
    }
    total
}
