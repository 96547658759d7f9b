"""Export the committed MIT-BIH CNN1 checkpoint as TorchScript, as a user's own model would arrive.

    python docs/examples/benchmark_torchscript_cnn1/export.py /tmp/ts/cnn1_mitdb.pt
"""

import sys

import torch

from medrobust.models import load_checkpoint

model = load_checkpoint("benchmarks/checkpoints/mitdb_cnn1_intra").eval()
torch.jit.save(torch.jit.trace(model, torch.rand(2, 1, 187)), sys.argv[1])
