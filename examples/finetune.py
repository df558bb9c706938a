"""Fine-tune a model with part of it frozen by the layerfreeze service, and show the frozen part never moves.

    make serve                          # in another terminal
    python examples/finetune.py         # or: --url http://host:port --token TOKEN

Steps: build a small model and save its state dict; send it to the service with a freeze spec (freeze the
first two Linear layers' weights, keep every bias trainable); restore the returned checkpoint into a fresh
model with ``apply``; build the optimizer over the trainable parameters only; train a few steps with AdamW
(weight decay on); check that every frozen weight is bit-identical and every trainable one moved.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from layerfreeze_client import Client, Spec, apply
from torch import nn


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("LAYERFREEZE_URL"), help="service URL")
    parser.add_argument("--token", default=os.environ.get("LAYERFREEZE_TOKEN"), help="bearer token")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "model.pt"
        torch.save(build_model().state_dict(), source)

        spec = Spec().freeze(names=["0", "2"]).unfreeze(params=["bias"])
        with Client(args.url, token=args.token) as client:
            result = client.freeze(source, spec, progress=sys.stderr.isatty())
        s = result.report.summary
        print(f"service: {s.frozen} of {s.parameters} parameters frozen "
              f"({s.numel_frozen:,} of {s.numel_total:,} elements); checkpoint {result.output.name}")

        # Restore: the weights into a fresh model, then the freeze state carried inside the checkpoint.
        model = build_model()
        model.load_state_dict(torch.load(result.output, weights_only=True))
        apply(model, result.output)
        states = {name: p.requires_grad for name, p in model.named_parameters()}
        assert states == result.report.states(), "the restored flags differ from the report"

        # Only trainable parameters go to the optimizer: weight decay and moments never touch frozen ones.
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        torch.manual_seed(1)
        model.train()
        for step in range(args.steps):
            x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            print(f"step {step}: loss {loss.item():.4f}")

    frozen = [n for n, trains in states.items() if not trains]
    moved = [n for n in frozen if not torch.equal(before[n], dict(model.named_parameters())[n])]
    still = [n for n, trains in states.items()
             if trains and torch.equal(before[n], dict(model.named_parameters())[n])]
    print(f"frozen and bit-identical after {args.steps} steps: {', '.join(frozen)}")
    assert frozen and not moved, f"frozen parameters moved: {moved}"
    assert not still, f"trainable parameters did not move: {still}"
    print("trainable and updated: " + ", ".join(n for n, t in states.items() if t))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
