"""Differential conformance: our reader against torch's own loader, on structure-aware mutants.

The property, for every mutant of a valid checkpoint (any format): if both our reader and torch
(``torch.load(weights_only=True)``, or ``torch.jit.load`` for TorchScript we generated ourselves) accept
it, they agree on every tensor's name, dtype, shape and ``requires_grad``, in the input and in our output
after a freeze with a random spec. A mutant that only one side accepts is fine (we refuse what we cannot
be sure of); every disagreement is a bug.

    figures = run(300, seed=0, work=Path("/tmp/x"))   # -> Figures (made, accepted_both, disagreements ...)
    python -m stress.differential --mutants 3000

torch runs in a subprocess (``stress.torch_oracle``), restarted if a mutant crashes or hangs it; the
mutants are read in one batch per process to keep this fast.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import selectors
import subprocess
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stress import synth
from stress.structured import mutate

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Base:
    name: str
    data: bytes
    mode: str = "load"  # how torch reads it: "load" or "jit"
    allow: list[str] = field(default_factory=list)  # classes the unmutated base needs allowlisted


@dataclass
class Ours:
    """What our reader and writer made of one file."""

    accepted: bool
    seconds: float
    detail: str = ""
    tensors: dict[str, list[Any]] = field(default_factory=dict)  # input: name -> [dtype, shape, rg, kind]
    output: Path | None = None
    report: dict[str, list[Any]] = field(default_factory=dict)  # output: name -> [dtype, shape, rg, kind]
    types_known: bool = False  # parameters and buffers are told apart by the file (a module)


@dataclass
class Figures:
    made: int = 0
    accepted_by_us: int = 0
    accepted_by_torch: int = 0
    accepted_both: int = 0
    outputs_compared: int = 0
    disagreements: list[str] = field(default_factory=list)
    slowest_refusal: tuple[float, str] = (0.0, "")
    torch_crashes: int = 0
    seconds: float = 0.0
    only_torch_accepts: Counter[str] = field(default_factory=Counter)  # our refusal reasons, normalized

    def rows(self) -> list[tuple[str, str]]:
        secs, what = self.slowest_refusal
        return [
            ("mutants made", str(self.made)),
            ("accepted by us / by torch", f"{self.accepted_by_us} / {self.accepted_by_torch}"),
            ("accepted by both (input compared)", str(self.accepted_both)),
            ("outputs compared after a freeze", str(self.outputs_compared)),
            ("disagreements", str(len(self.disagreements))),
            ("slowest refusal", f"{secs * 1000:.1f} ms ({what[:50]})"),
            ("refused by us only (torch reads them)", str(sum(self.only_torch_accepts.values()))),
            ("torch crashed or hung", str(self.torch_crashes)),
            ("wall time", f"{self.seconds:.1f}s"),
        ]


# -- bases -----------------------------------------------------------------------------------------------
def build_bases(work: Path) -> list[Base]:
    """Valid checkpoints of every format, written by torch (and by ``synth`` for records torch reads but
    rarely writes: pickled states, the old ``_rebuild_tensor``, storages on cuda:0)."""
    import torch
    from fixtures.models import build, save

    work.mkdir(parents=True, exist_ok=True)
    bases: list[Base] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fmt in ("state_dict", "checkpoint", "module", "legacy", "torchscript"):
            for model in ("user", "seq3") if fmt != "torchscript" else ("seq3", "nested", "user"):
                path = save(build(model), work / f"{model}-{fmt}.pt", fmt)
                allow = []
                if fmt == "module":
                    allow = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
                mode = "jit" if fmt == "torchscript" else "load"
                bases.append(Base(f"{model}-{fmt}", path.read_bytes(), mode, allow))
        # tensors that carry attributes: torch.save writes their state (requires_grad in it, or inert)
        model = build("seq3")
        params = dict(model.named_parameters())
        first, second = list(params.values())[:2]
        first.__dict__["requires_grad"] = False  # what t.__dict__["requires_grad"] = ... saves
        second._is_hf_initialized = True
        torch.save(params, work / "attrs.pt")
        bases.append(Base("param-attrs", (work / "attrs.pt").read_bytes()))
        plain = {n: p.detach().clone() for n, p in build("seq3").named_parameters()}
        plain["0.weight"].__dict__["note"] = "x"
        torch.save(plain, work / "tensor-attrs.pt")
        bases.append(Base("tensor-attrs", (work / "tensor-attrs.pt").read_bytes()))
        layer = torch.nn.Linear(3, 3)  # one module under three paths (ALBERT-style sharing)
        shared = torch.nn.Sequential(layer, torch.nn.ReLU(), layer)
        shared.extra = layer
        torch.save(shared, work / "shared-module.pt")
        allow = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(work / "shared-module.pt")))
        bases.append(Base("shared-module", (work / "shared-module.pt").read_bytes(), "load", allow))
        torch.save(shared.state_dict(), work / "shared-state.pt")
        bases.append(Base("shared-state_dict", (work / "shared-state.pt").read_bytes()))
        torch.jit.save(torch.jit.script(torch.nn.Sequential(layer, torch.nn.ReLU(), layer)),
                       str(work / "shared-ts.pt"))
        bases.append(Base("shared-torchscript", (work / "shared-ts.pt").read_bytes(), "jit"))
        try:
            from fixtures.models import tiny_bert

            bert = tiny_bert()
            if bert is not None:
                torch.save(bert.state_dict(), work / "bert.pt")
                bases.append(Base("bert-state_dict", (work / "bert.pt").read_bytes()))
        except ImportError:
            pass
    return bases


def synthetic_base(rng: random.Random, work: Path, index: int) -> Base:
    entries = synth.random_entries(rng)
    wrap = rng.choice([None, None, "state_dict", "model_state", "ema", "weights"])
    path = work / f"synth-{index}.pt"
    if rng.random() < 0.3:
        synth.write_legacy(entries, path, wrap=wrap)
    else:
        synth.write_zip(entries, path, wrap=wrap)
    return Base(f"synth-{index}", path.read_bytes())


# -- our side --------------------------------------------------------------------------------------------
def read_ours(path: Path, rng: random.Random, out: Path) -> Ours:
    from layerfreeze.errors import FormatError, LimitExceeded, SpecError
    from layerfreeze.formats.detect import open_archive
    from layerfreeze.freeze import freeze_file

    t0 = time.perf_counter()
    try:
        inventory = open_archive(path).inventory
    except (FormatError, LimitExceeded) as exc:
        return Ours(False, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
    ours = Ours(True, time.perf_counter() - t0, types_known=inventory.types_known)
    for t in inventory.tensors:
        for name in (t.name, *t.aliases):
            ours.tensors[name] = [t.dtype, list(t.shape), t.requires_grad, t.kind]
    params = [t.name for t in inventory.tensors if t.kind == "parameter"]
    chosen = rng.sample(params, rng.randint(0, len(params)))
    action = rng.choice(["freeze", "unfreeze"])
    rules = [{"action": action, "regex": ["^" + re.escape(n) + "$" for n in chosen]}] if chosen else []
    try:
        report = freeze_file(path, {"rules": rules, "strict": False}, out)
    except (FormatError, LimitExceeded, SpecError) as exc:
        ours.detail = f"write refused: {type(exc).__name__}: {exc}"
        return ours
    doc = report.model_dump(mode="json")
    for p in doc["parameters"]:
        for name in (p["name"], *p["aliases"]):
            ours.report[name] = [p["dtype"], p["shape"], p["requires_grad"], "parameter"]
    for t in inventory.tensors:  # buffers: name, dtype and shape (the report states no flag for them)
        if t.kind == "buffer":
            for name in (t.name, *t.aliases):
                ours.report[name] = [t.dtype, list(t.shape), None, "buffer"]
    ours.output = out
    return ours


def disagreement(ours: dict[str, list[Any]], theirs: dict[str, list[Any]], *, types_known: bool) -> str:
    """"" when both readings agree, else what differs. For our parameters, ``requires_grad`` None means
    "the file records none" (a state dict of plain tensors), where torch gives False. Parameters and
    buffers are compared as such where the file tells them apart (a module); the report states no flag
    for buffers."""
    if set(ours) != set(theirs):
        only_ours, only_theirs = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        return f"names differ: only ours {only_ours[:5]}, only torch's {only_theirs[:5]}"
    for name, (dtype, shape, rg, kind) in ours.items():
        t_dtype, t_shape, t_rg, t_kind = theirs[name]
        if (dtype, list(shape)) != (t_dtype, list(t_shape)):
            return f"{name}: ours {dtype}{shape}, torch {t_dtype}{t_shape}"
        if types_known and t_kind != "tensor" and kind != t_kind:
            return f"{name}: ours a {kind}, torch a {t_kind}"
        if kind == "parameter" and (False if rg is None else rg) != t_rg:
            return f"{name}: requires_grad ours {rg}, torch {t_rg}"
    return ""


# -- torch's side ----------------------------------------------------------------------------------------
class Oracle:
    """``stress.torch_oracle`` in a subprocess; a job that crashes or hangs it is answered as refused."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.proc: subprocess.Popen[str] | None = None
        self.crashes = 0

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), str(ROOT / "tests"), str(ROOT / "service"), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-m", "stress.torch_oracle"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                     cwd=ROOT)
        if self._line(120) is None:
            raise RuntimeError("the torch oracle did not start")

    def _line(self, timeout: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
        return self.proc.stdout.readline() or None

    def read(self, path: Path, mode: str, allow: list[str]) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"path": str(path), "mode": mode, "allow": allow}) + "\n")
            self.proc.stdin.flush()
            line = self._line(self.timeout)
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            self.crashes += 1
            self.close()
            return {"ok": False, "error": "torch crashed or hung"}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# -- the property ----------------------------------------------------------------------------------------
def run(mutants: int, seed: int, work: Path, *, keep: Path | None = None) -> Figures:
    """``mutants`` mutants from seed ``seed``; disagreeing mutants are copied to ``keep`` when given."""
    t0 = time.perf_counter()
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    bases = build_bases(work / "bases")
    fig = Figures()
    oracle = Oracle()
    try:
        for i in range(mutants):
            base = synthetic_base(rng, work, i % 50) if rng.random() < 0.35 else rng.choice(bases)
            kinds = ("code.", "zip.", "pickle.") if base.mode == "jit" else ("zip.", "pickle.")
            data, applied = mutate(base.data, rng, kinds)
            if rng.random() < 0.1 and base.name.startswith("synth"):
                applied = ["(synthetic, unmutated)"]  # the random structure alone is the case
                data = base.data
            label = f"#{i} {base.name} {'+'.join(applied) or 'unmutated'}"
            path = work / f"mutant-{i % 64}.pt"
            path.write_bytes(data)
            fig.made += 1
            ours = read_ours(path, rng, work / f"mutant-{i % 64}.out.pt")
            if not ours.accepted and ours.seconds > fig.slowest_refusal[0]:
                fig.slowest_refusal = (ours.seconds, label)
            theirs = oracle.read(path, base.mode, base.allow)
            fig.accepted_by_us += ours.accepted
            fig.accepted_by_torch += theirs["ok"]
            if theirs["ok"] and not ours.accepted:
                fig.only_torch_accepts[re.sub(r"'[^']*'|\d+", "_", ours.detail)[:110]] += 1
            if not (ours.accepted and theirs["ok"]):
                continue
            fig.accepted_both += 1
            problem = disagreement(ours.tensors, theirs["tensors"], types_known=ours.types_known)
            if not problem and ours.output is not None:
                after = oracle.read(ours.output, base.mode, base.allow)
                fig.outputs_compared += 1
                if not after["ok"]:
                    problem = f"torch refuses our output: {after['error']}"
                else:
                    problem = disagreement(ours.report, after["tensors"], types_known=ours.types_known)
                    problem = f"output: {problem}" if problem else ""
            if problem:
                fig.disagreements.append(f"{label}: {problem}")
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    (keep / f"disagreement-{i}.pt").write_bytes(data)
    finally:
        oracle.close()
        fig.torch_crashes = oracle.crashes
    fig.seconds = time.perf_counter() - t0
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stress.differential")
    ap.add_argument("--mutants", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="copy disagreeing mutants here")
    ap.add_argument("--reasons", type=int, default=0,
                    help="list the N commonest refusals of files torch reads")
    args = ap.parse_args(argv)
    import tempfile

    from stress import ensure_paths

    ensure_paths()
    with tempfile.TemporaryDirectory(prefix="lf-diff-") as tmp:
        fig = run(args.mutants, args.seed, Path(tmp), keep=args.keep)
    for what, figure in fig.rows():
        print(f"{what:38s} {figure}")
    for reason, n in fig.only_torch_accepts.most_common(args.reasons):
        print(f"  refused by us only x{n}: {reason}")
    for d in fig.disagreements[:50]:
        print("DISAGREEMENT", d)
    return 1 if fig.disagreements else 0


if __name__ == "__main__":
    raise SystemExit(main())
