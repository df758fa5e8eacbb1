//! The 2.5D-AttentionUNet described once, as data: every module with its name, widths and
//! kernels ([`Unet25dSpec`]). Everything else follows from this description:
//! - the parameter catalog ([`layers`], [`tensor_keys`]): named and shaped exactly as the
//!   reference's `state_dict()` writes them, in file order. Loaders check a checkpoint against
//!   it; savers write in this order so PyTorch's `load_state_dict(strict=True)` accepts the file;
//! - the graph (`model::blocks`, `model::unet25d`): each block is built from its spec's layers,
//!   so no layer name is spelled twice;
//! - FLOP and byte counts (`model::cost`): the real graph run on the shape-only backend;
//! - training-only behaviour: the blocks call `Backend::dropout` where the reference has a
//!   `Dropout3d` (identity on every backend but the training tape).
//!
//! A second network adds its own description beside this one (specs of its blocks, a
//! `layers()` in its checkpoint's order) and its graph against `Backend`.

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
    fn conv(prefix: String, cin: usize, cout: usize, k: Dims, bias: bool) -> Layer {
        Layer { prefix, kind: LayerKind::Conv(ConvSpec { cin, cout, k, bias }), alias_of: None }
    }

    fn conv_t(prefix: String, cin: usize, cout: usize, k: Dims) -> Layer {
        Layer { prefix, kind: LayerKind::ConvT(ConvTSpec { cin, cout, k }), alias_of: None }
    }

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

    /// This layer as stored a second time under the module `as_module` that shares `of`'s
    /// storage (the layer's prefix starts with `of`).
    fn alias(&self, of: &str, as_module: &str) -> Layer {
        Layer {
            prefix: format!("{as_module}{}", &self.prefix[of.len()..]),
            kind: self.kind,
            alias_of: Some(self.prefix.clone()),
        }
    }
}

const K331: Dims = [3, 3, 1];
const K113: Dims = [1, 1, 3];
const K333: Dims = [3, 3, 3];
const K111: Dims = [1, 1, 1];

/// `EncoderA`/`EncoderB`: two residual pairs of conv-IN(-ReLU), the first with a 1x1 shortcut.
#[derive(Clone, Debug)]
pub struct EncoderSpec {
    pub prefix: String,
    pub cin: usize,
    pub cout: usize,
    pub k: Dims,
}

impl EncoderSpec {
    /// `[conv1.0, conv1.1, conv2.0, conv2.1, shortcut]`.
    pub fn layers(&self) -> [Layer; 5] {
        let (p, i, o, k) = (&self.prefix, self.cin, self.cout, self.k);
        [
            Layer::conv(format!("{p}.conv1.0.block.0"), i, o, k, true),
            Layer::conv(format!("{p}.conv1.1.block.0"), o, o, k, true),
            Layer::conv(format!("{p}.conv2.0.block.0"), o, o, k, true),
            Layer::conv(format!("{p}.conv2.1.block.0"), o, o, k, true),
            Layer::conv(format!("{p}.conv3"), i, o, K111, true),
        ]
    }
}

/// `Decoder(c, c)`: (3,3,1) conv-IN-ReLU, (1,1,3) conv-IN, a 1x1 shortcut.
#[derive(Clone, Debug)]
pub struct DecoderSpec {
    pub prefix: String,
    pub c: usize,
}

impl DecoderSpec {
    /// `[conv1.0, conv1.1, shortcut]`.
    pub fn layers(&self) -> [Layer; 3] {
        let (p, c) = (&self.prefix, self.c);
        [
            Layer::conv(format!("{p}.conv1.0.block.0"), c, c, K331, true),
            Layer::conv(format!("{p}.conv1.1.block.0"), c, c, K113, true),
            Layer::conv(format!("{p}.conv2"), c, c, K111, true),
        ]
    }
}

/// Spatial attention: two factorised branches, (3,1,1) then (1,3,1) and the reverse.
#[derive(Clone, Debug)]
pub struct SpatialAttentionSpec {
    pub prefix: String,
    pub c: usize,
}

impl SpatialAttentionSpec {
    /// `[branch 1 first, branch 1 second, branch 2 first, branch 2 second]`.
    pub fn layers(&self) -> [Layer; 4] {
        let (p, c) = (&self.prefix, self.c);
        [
            Layer::conv(format!("{p}.conv1.0"), c, c / 2, [3, 1, 1], true),
            Layer::conv(format!("{p}.conv1.3"), c / 2, 1, [1, 3, 1], true),
            Layer::conv(format!("{p}.conv2.0"), c, c / 2, [1, 3, 1], true),
            Layer::conv(format!("{p}.conv2.3"), c / 2, 1, [3, 1, 1], true),
        ]
    }
}

/// Channel attention: two 3x3x3 conv-IN at half resolution.
#[derive(Clone, Debug)]
pub struct ChannelAttentionSpec {
    pub prefix: String,
    pub c: usize,
}

impl ChannelAttentionSpec {
    pub fn layers(&self) -> [Layer; 2] {
        let (p, c) = (&self.prefix, self.c);
        [
            Layer::conv(format!("{p}.conv.0.block.0"), c, c / 4, K333, true),
            Layer::conv(format!("{p}.conv.1.block.0"), c / 4, c, K333, true),
        ]
    }
}

/// The bottleneck's context block over `c` channels (inner width `c / 4`).
#[derive(Clone, Debug)]
pub struct ContextSpec {
    pub prefix: String,
    pub c: usize,
}

/// The context block's layers by role.
pub struct ContextLayers {
    pub trans: Layer,
    pub c1_1: Layer,
    pub c1_2: Layer,
    /// `conv2_0` .. `conv2_7`.
    pub c2: [Layer; 8],
    pub c3: Layer,
    pub score0: Layer,
    pub score1: Layer,
}

impl ContextSpec {
    pub fn layers(&self) -> ContextLayers {
        let (p, c, i) = (&self.prefix, self.c, self.c / 4);
        let k2: [Dims; 8] = [K333, K333, K333, [1, 3, 3], [3, 1, 3], K331, K333, K333];
        ContextLayers {
            trans: Layer::conv(format!("{p}.trans_layer.block.0"), c, i, K111, true),
            c1_1: Layer::conv(format!("{p}.conv1_1.block.0"), i, i, K111, true),
            c1_2: Layer::conv(format!("{p}.conv1_2.block.0"), i, i, K111, true),
            c2: std::array::from_fn(|n| Layer::conv(format!("{p}.conv2_{n}.block.0"), i, i, k2[n], true)),
            c3: Layer::conv(format!("{p}.conv3.block.0"), 2 * i, i, K111, true),
            score0: Layer::conv(format!("{p}.score_layer.0.block.0"), i, i, K333, true),
            score1: Layer::conv(format!("{p}.score_layer.1"), i, c, K111, false),
        }
    }
}

impl ContextLayers {
    /// In the reference's registration order.
    fn all(self) -> Vec<Layer> {
        let mut v = vec![self.trans, self.c1_1, self.c1_2];
        v.extend(self.c2);
        v.extend([self.c3, self.score0, self.score1]);
        v
    }
}

/// The attention module a decoder stage applies: one of the encoder side's, shared.
#[derive(Clone, Debug)]
pub enum AttentionSpec {
    Channel(ChannelAttentionSpec),
    Spatial(SpatialAttentionSpec),
}

impl AttentionSpec {
    pub fn prefix(&self) -> &str {
        match self {
            AttentionSpec::Channel(s) => &s.prefix,
            AttentionSpec::Spatial(s) => &s.prefix,
        }
    }

    pub fn layers(&self) -> Vec<Layer> {
        match self {
            AttentionSpec::Channel(s) => s.layers().to_vec(),
            AttentionSpec::Spatial(s) => s.layers().to_vec(),
        }
    }
}

/// `Up`: transposed conv (kernel = stride `k`) from `cin` to `cup` channels, replicate pad and
/// sum with the skip, the shared `attention`, the decoder.
#[derive(Clone, Debug)]
pub struct UpSpec {
    pub prefix: String,
    pub cin: usize,
    pub cup: usize,
    pub k: Dims,
    /// Registered under its own name on the encoder side; stored again as `{prefix}.attention`.
    pub attention: AttentionSpec,
    pub decoder: DecoderSpec,
    /// The reference's `up_4` registers its decoder before its attention, the others after.
    pub decoder_first: bool,
}

impl UpSpec {
    pub fn up(&self) -> Layer {
        Layer::conv_t(format!("{}.up", self.prefix), self.cin, self.cup, self.k)
    }

    /// The stage's layers in registration order, the attention as aliases.
    fn layers(&self) -> Vec<Layer> {
        let of = self.attention.prefix();
        let as_module = format!("{}.attention", self.prefix);
        let alias: Vec<Layer> = self.attention.layers().iter().map(|l| l.alias(of, &as_module)).collect();
        let decoder = self.decoder.layers().to_vec();
        let mut v = vec![self.up()];
        if self.decoder_first {
            v.extend(decoder.into_iter().chain(alias));
        } else {
            v.extend(alias.into_iter().chain(decoder));
        }
        v
    }
}

/// The whole network: the reference `Unet_seg.Unet` with its published widths.
#[derive(Clone, Debug)]
pub struct Unet25dSpec {
    pub conv_0: EncoderSpec,
    /// `down_1` .. `down_4` (their encoders).
    pub down: [EncoderSpec; 4],
    pub context: ContextSpec,
    pub attention_4: ChannelAttentionSpec,
    /// `up_4`, `up_3`, `up_2`, `up_1`, in the order the decoder runs them; each owns the
    /// encoder-side attention it shares (`attention_3` .. `attention_0`).
    pub up: [UpSpec; 4],
    pub final_conv: Layer,
}

impl Unet25dSpec {
    /// The published network (widths [`FEATURES`]).
    pub fn published() -> Self {
        let f = FEATURES;
        let enc = |prefix: &str, cin, cout, k| EncoderSpec { prefix: prefix.into(), cin, cout, k };
        let spatial =
            |i: usize, c| AttentionSpec::Spatial(SpatialAttentionSpec { prefix: format!("attention_{i}"), c });
        let up = |stage: usize, cin, cup, k, attention, cout| UpSpec {
            prefix: format!("up_{stage}"),
            cin,
            cup,
            k,
            attention,
            decoder: DecoderSpec { prefix: format!("up_{stage}.convs"), c: cout },
            decoder_first: stage == 4,
        };
        let channel_3 = AttentionSpec::Channel(ChannelAttentionSpec { prefix: "attention_3".into(), c: f[3] });
        Unet25dSpec {
            conv_0: enc("conv_0", 1, f[0], K331),
            down: [
                enc("down_1.down.1", f[0], f[1], K331),
                enc("down_2.down.1", f[1], f[2], K331),
                enc("down_3.down.1", f[2], f[3], K333),
                enc("down_4.down.1", f[3], f[4], K333),
            ],
            context: ContextSpec { prefix: "context_block_1".into(), c: f[4] },
            attention_4: ChannelAttentionSpec { prefix: "attention_4".into(), c: f[4] },
            up: [
                up(4, f[4], f[4] / 2, [2, 2, 2], channel_3, f[3]),
                up(3, f[3], f[3] / 2, [2, 2, 1], spatial(2, f[2]), f[2]),
                up(2, f[2], f[2] / 2, [2, 2, 1], spatial(1, f[1]), f[1]),
                up(1, f[1], f[1], [2, 2, 1], spatial(0, f[0]), f[5]),
            ],
            final_conv: Layer::conv("final_conv".into(), f[5], 2, K111, true),
        }
    }

    /// Every layer in the reference's `state_dict()` order, aliases included: each encoder
    /// followed by the attention registered after it, the bottleneck, the decoder stages.
    pub fn layers(&self) -> Vec<Layer> {
        // The encoder-side attention registered after encoder i (up[3 - i] owns it).
        let shared = |i: usize| self.up[3 - i].attention.layers();
        let mut v: Vec<Layer> = self.conv_0.layers().to_vec();
        v.extend(shared(0));
        for (i, enc) in self.down.iter().enumerate() {
            v.extend(enc.layers());
            if i < 3 {
                v.extend(shared(i + 1));
            }
        }
        v.extend(self.context.layers().all());
        v.extend(self.attention_4.layers());
        for up in &self.up {
            v.extend(up.layers());
        }
        v.push(self.final_conv.clone());
        v
    }
}

/// The published network's layers in the reference's `state_dict()` order, aliases included.
pub fn layers() -> Vec<Layer> {
    Unet25dSpec::published().layers()
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

// ---------------------------------------------------------------------------------------------
// The axSpA classifier (the paper's second model; its architecture is not published, so this
// description is the spec of record, written up in `docs/classifier.md`).

/// Input channels: the z-scored T1 crop and the ROI map (the crop inside the FM mask, 0 elsewhere).
pub const CLASSIFIER_INPUT_CHANNELS: usize = 2;
/// Stage widths of the classifier's encoder.
pub const CLASSIFIER_WIDTHS: [usize; 4] = [8, 16, 32, 64];
/// Clinical features the image+clinical variant joins to the pooled image features
/// (`pipeline::clinical::FEATURE_NAMES`).
pub const CLINICAL_FEATURES: usize = 9;

/// One residual stage: a pool that shrinks the grid, an in-plane (3,3,1) conv-IN-ReLU that sets
/// the width, then a through-plane (1,1,3) conv-IN with that output as the shortcut, ReLU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassifierStageSpec {
    pub prefix: String,
    /// Average pool (the stem, before the first stage) or max pool by this factor; 1 = none.
    pub pool: Dims,
    pub cin: usize,
    pub cout: usize,
}

impl ClassifierStageSpec {
    /// `[in-plane, through-plane]`, without biases: an instance norm follows each, which
    /// would subtract any bias again (the reference's convs carry such dead biases; ours do not).
    pub fn layers(&self) -> [Layer; 2] {
        let (p, i, o) = (&self.prefix, self.cin, self.cout);
        [Layer::conv(format!("{p}.inplane"), i, o, K331, false), Layer::conv(format!("{p}.through"), o, o, K113, false)]
    }
}

/// The classifier: a 2.5D residual encoder on the 192x192x16 crop (the stem averages 2x2
/// in-plane, then max pools 2x2x2, 2x2x2, 2x2x1 between stages: 96x96x16 .. 12x12x4), global
/// average pooling, optionally the clinical features, and a linear head (a 1x1x1 conv on the
/// pooled vector) giving the axSpA logit. Grad-CAM reads the last stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassifierSpec {
    pub stages: Vec<ClassifierStageSpec>,
    /// 0: image only; [`CLINICAL_FEATURES`]: image + clinical.
    pub clinical: usize,
    /// The head: `(1, features + clinical, 1, 1, 1)` weight and a bias.
    pub head: Layer,
}

impl ClassifierSpec {
    /// The design of record; `clinical` chooses the variant.
    pub fn new(clinical: bool) -> Self {
        let w = CLASSIFIER_WIDTHS;
        let pools: [Dims; 4] = [[2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]];
        let stages = (0..w.len())
            .map(|i| ClassifierStageSpec {
                prefix: format!("stage{i}"),
                pool: pools[i],
                cin: if i == 0 { CLASSIFIER_INPUT_CHANNELS } else { w[i - 1] },
                cout: w[i],
            })
            .collect();
        let extra = if clinical { CLINICAL_FEATURES } else { 0 };
        ClassifierSpec {
            stages,
            clinical: extra,
            head: Layer::conv("head".into(), w[w.len() - 1] + extra, 1, K111, true),
        }
    }

    /// Width of the last stage (the pooled image features, Grad-CAM's channels).
    pub fn features(&self) -> usize {
        self.stages.last().map_or(0, |s| s.cout)
    }

    /// The last stage's grid for an input of `dims`.
    pub fn feature_dims(&self, dims: Dims) -> Dims {
        self.stages.iter().fold(dims, |d, s| [d[0] / s.pool[0], d[1] / s.pool[1], d[2] / s.pool[2]])
    }

    /// Every layer in checkpoint order: the stages, then the head.
    pub fn layers(&self) -> Vec<Layer> {
        let mut v: Vec<Layer> = self.stages.iter().flat_map(|s| s.layers()).collect();
        v.push(self.head.clone());
        v
    }

    /// Every `(key, shape)` in checkpoint order.
    pub fn tensor_keys(&self) -> Vec<(String, Vec<usize>)> {
        self.layers().iter().flat_map(|l| l.tensors()).collect()
    }

    pub fn parameter_count(&self) -> usize {
        self.tensor_keys().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    /// Which variant a checkpoint is, from its head's input width.
    pub fn of_head_width(width: usize) -> Option<Self> {
        [false, true].into_iter().map(ClassifierSpec::new).find(|s| s.head_width() == width)
    }

    fn head_width(&self) -> usize {
        match self.head.kind {
            LayerKind::Conv(s) => s.cin,
            LayerKind::ConvT(s) => s.cin,
        }
    }

    pub fn name(&self) -> &'static str {
        if self.clinical > 0 {
            "image+clinical"
        } else {
            "image"
        }
    }
}
