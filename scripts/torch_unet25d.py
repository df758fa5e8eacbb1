"""The 2.5D-AttentionUNet in PyTorch, written from ../shared/docs/reference-model.md with the
reference's checkpoint key names, so the same weights load here and in fmseg.

Used for side-by-side benchmarks (scripts/bench_pytorch.py, scripts/gpu_bench_torch.py) and checked
against the reference fixtures by scripts/torch_parity.py (tests/ops/torch_baseline.rs).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _same(k):
    return tuple(s // 2 for s in k)


class ConvNorm(nn.Module):
    """Conv3d -> InstanceNorm3d (-> Dropout3d -> ReLU); key `block.0` is the conv."""

    def __init__(self, cin, cout, k, relu, p=0.2):
        super().__init__()
        k = (k, k, k) if isinstance(k, int) else k
        layers = [nn.Conv3d(cin, cout, k, padding=_same(k)), nn.InstanceNorm3d(cout)]
        if relu:
            layers += [nn.Dropout3d(p), nn.ReLU()]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, cin, cout, k, p):
        super().__init__()
        self.conv1 = nn.Sequential(ConvNorm(cin, cout, k, True, p), ConvNorm(cout, cout, k, False))
        self.conv2 = nn.Sequential(ConvNorm(cout, cout, k, True, p), ConvNorm(cout, cout, k, False))
        self.conv3 = nn.Conv3d(cin, cout, 1)

    def forward(self, x):
        x1 = F.relu(self.conv1(x) + self.conv3(x))
        return F.relu(self.conv2(x1) + x1)


class Down(nn.Module):
    def __init__(self, cin, cout, k, pool, p):
        super().__init__()
        self.down = nn.Sequential(nn.MaxPool3d(pool, pool), Encoder(cin, cout, k, p))

    def forward(self, x):
        return self.down(x)


class Decoder(nn.Module):
    def __init__(self, c, p):
        super().__init__()
        self.conv1 = nn.Sequential(ConvNorm(c, c, (3, 3, 1), True, p), ConvNorm(c, c, (1, 1, 3), False))
        self.conv2 = nn.Conv3d(c, c, 1)

    def forward(self, x):
        return F.relu(self.conv1(x) + self.conv2(x))


class SpatialAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c // 2

        def branch(k1, k2):
            return nn.Sequential(
                nn.Conv3d(c, h, k1, padding=_same(k1)), nn.InstanceNorm3d(h), nn.ReLU(),
                nn.Conv3d(h, 1, k2, padding=_same(k2)), nn.InstanceNorm3d(1))

        self.conv1 = branch((3, 1, 1), (1, 3, 1))
        self.conv2 = branch((1, 3, 1), (3, 1, 1))

    def forward(self, x):
        w = torch.sigmoid(self.conv1(x) + self.conv2(x))
        return x * w + x, w


# The reference hard-codes Dropout3d(p=0.2) in the channel attention and the context block,
# whatever dropout the network is built with: in train() mode those layers are random even in
# Unet(dropout=0). Take gradients in eval() mode for deterministic results.
REFERENCE_FIXED_DROPOUT = 0.2


class ChannelAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        p = REFERENCE_FIXED_DROPOUT
        self.conv = nn.Sequential(ConvNorm(c, c // 4, 3, True, p), ConvNorm(c // 4, c, 3, False))

    def forward(self, x):
        size = x.shape[2:]
        f = self.conv(F.adaptive_avg_pool3d(x, tuple(s // 2 for s in size)))
        w = F.interpolate(f, size=size, mode="trilinear", align_corners=True)
        return x * w + x, None


class ContextBlock(nn.Module):
    def __init__(self, c, p):
        super().__init__()
        p = REFERENCE_FIXED_DROPOUT
        i = c // 4
        self.trans_layer = ConvNorm(c, i, 1, True, p)
        self.conv1_1 = ConvNorm(i, i, 1, True, p)
        self.conv1_2 = ConvNorm(i, i, 1, True, p)
        for n, k in enumerate([3, 3, 3, (1, 3, 3), (3, 1, 3), (3, 3, 1)]):
            setattr(self, f"conv2_{n}", ConvNorm(i, i, k, False))
        self.conv2_6 = ConvNorm(i, i, 3, True, p)
        self.conv2_7 = ConvNorm(i, i, 3, True, p)
        self.conv3 = ConvNorm(2 * i, i, 1, False)
        self.score_layer = nn.Sequential(ConvNorm(i, i, 3, True, p), nn.Conv3d(i, c, 1, bias=False))

    def forward(self, x):
        size = x.shape[2:]

        def up(t):
            return F.interpolate(t, size=size, mode="trilinear", align_corners=True)

        x0 = self.trans_layer(x)
        x1 = self.conv1_1(x0)
        a = self.conv2_0(x1) + up(self.conv2_1(F.max_pool3d(x1, 2))) + up(self.conv2_2(F.max_pool3d(x1, 4)))
        o1 = self.conv2_6(F.relu(a))
        x2 = self.conv1_2(x0)
        b = (up(self.conv2_3(F.max_pool3d(x2, (12, 1, 1)))) + up(self.conv2_4(F.max_pool3d(x2, (1, 12, 1))))
             + up(self.conv2_5(F.max_pool3d(x2, (1, 1, 8)))))
        o2 = self.conv2_7(F.relu(b))
        o = F.relu(x0 + self.conv3(torch.cat([o1, o2], 1)))
        return self.score_layer(o)


class Up(nn.Module):
    def __init__(self, cin, cup, k, attention, p, decoder_first):
        super().__init__()
        self.up = nn.ConvTranspose3d(cin, cup, k, stride=k)
        # Registration order decides the checkpoint's key order (up_4 differs from the others).
        if decoder_first:
            self.convs = Decoder(cup, p)
            self.attention = attention
        else:
            self.attention = attention
            self.convs = Decoder(cup, p)

    def forward(self, x, skip):
        u = self.up(x)
        pad = []
        for ax in (4, 3, 2):
            pad += [0, skip.shape[ax] - u.shape[ax]]
        u = F.pad(u, pad, mode="replicate")
        s, w = self.attention(skip + u)
        return self.convs(s), w


class Unet25d(nn.Module):
    def __init__(self, dropout=0.0):
        super().__init__()
        f = (32, 32, 64, 128, 256, 32)
        p = dropout
        self.conv_0 = Encoder(1, f[0], (3, 3, 1), p)
        self.attention_0 = SpatialAttention(f[0])
        self.down_1 = Down(f[0], f[1], (3, 3, 1), (2, 2, 1), p)
        self.attention_1 = SpatialAttention(f[1])
        self.down_2 = Down(f[1], f[2], (3, 3, 1), (2, 2, 1), p)
        self.attention_2 = SpatialAttention(f[2])
        self.down_3 = Down(f[2], f[3], 3, (2, 2, 1), p)
        self.attention_3 = ChannelAttention(f[3])
        self.down_4 = Down(f[3], f[4], 3, 2, p)
        self.context_block_1 = ContextBlock(f[4], p)
        self.attention_4 = ChannelAttention(f[4])
        self.up_4 = Up(f[4], f[4] // 2, 2, self.attention_3, p, True)
        self.up_3 = Up(f[3], f[3] // 2, (2, 2, 1), self.attention_2, p, False)
        self.up_2 = Up(f[2], f[2] // 2, (2, 2, 1), self.attention_1, p, False)
        self.up_1 = Up(f[1], f[1], (2, 2, 1), self.attention_0, p, False)
        self.final_conv = nn.Conv3d(f[5], 2, 1)

    def forward(self, x, maps=False):
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.attention_4(self.context_block_1(self.down_4(x3)))[0]
        u4, _ = self.up_4(x4, x3)
        u3, w2 = self.up_3(u4, x2)
        u2, w1 = self.up_2(u3, x1)
        u1, w0 = self.up_1(u2, x0)
        logits = self.final_conv(u1)
        return (logits, w0, w1, w2) if maps else logits


def load_weights(path):
    """A state dict from .pth (torch.save) or .safetensors."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(str(path))
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if "state_dict" in sd:
        sd = sd["state_dict"]
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
