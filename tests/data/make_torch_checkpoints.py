"""Writes the small PyTorch-made checkpoints that tests/weights.rs reads (run once, by hand,
with PyTorch 2.9.1; the outputs are committed so the tests never need torch):

  torch_views.pth      strided views sharing one storage (transpose, slice with offset, step,
                       expand), float16 / bfloat16 / float64 storages, a 0-d tensor and an
                       nn.Parameter (pickled through _rebuild_parameter)
  torch_training.pth   a training checkpoint: {"epoch", "best_dice", "state_dict", "optimizer"}
                       (AdamW state: nested dicts with int keys, lists, floats, step tensors),
                       its storages recorded as living on cuda:0 (a tagger registered below
                       stands in for a GPU, which this machine lacks)
  torch_legacy.pth     the same small state dict in the pre-1.6 (non-zip) format
  torch_protocol4.pth  the small state dict pickled with protocol 4 (FRAME, SHORT_BINUNICODE,
                       MEMOIZE, STACK_GLOBAL) instead of torch.save's default 2

Every value is a simple formula of its position, restated in the Rust tests.
"""
from collections import OrderedDict

import torch

torch.manual_seed(0)
base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
sd = OrderedDict()
sd["base"] = base
sd["transposed"] = base.t()  # (6, 4), stride (1, 6)
sd["sliced"] = base[1:3, 2:5]  # offset 8, size (2, 3), stride (6, 1)
sd["stepped"] = base[:, ::2]  # (4, 3), stride (6, 2)
sd["expanded"] = torch.tensor([1.0, 2.0, 3.0]).expand(2, 3)  # stride (0, 1)
sd["half"] = (torch.arange(6, dtype=torch.float32) / 4 - 0.5).half().reshape(2, 3)
sd["bfloat16"] = torch.tensor([1.5, -2.25, 3.0]).bfloat16()
sd["double"] = torch.tensor([[0.1, 1 / 3], [2.0, -7.5]], dtype=torch.float64)
sd["scalar"] = torch.tensor(4.25)
sd["param"] = torch.nn.Parameter(torch.full((2,), 0.75))
torch.save(sd, "torch_views.pth")

small = OrderedDict(w=torch.arange(6, dtype=torch.float32).reshape(2, 3) / 8, b=torch.tensor([-1.0, 1.0]))
lin = torch.nn.Linear(3, 2)
with torch.no_grad():
    lin.weight.copy_(small["w"])
    lin.bias.copy_(small["b"])
opt = torch.optim.AdamW(lin.parameters(), lr=5e-4)
lin(torch.ones(1, 3)).sum().backward()
opt.step()


def gpu_tagger(obj):
    return "cuda:0"


torch.serialization.register_package(1, gpu_tagger, lambda obj, loc: obj)
torch.save({"epoch": 7, "best_dice": 0.8186, "state_dict": small, "optimizer": opt.state_dict()}, "torch_training.pth")
torch.save(small, "torch_legacy.pth", _use_new_zipfile_serialization=False)
torch.save(small, "torch_protocol4.pth", pickle_protocol=4)
