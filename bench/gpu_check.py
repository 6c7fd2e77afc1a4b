"""The prepared GPU check: one command that times every GPU path of the stages on random weights in real shapes.

Why: a lent GPU hour is short; this runs the project's own code paths (not re-implementations), in the
shapes of the paper's runs, and writes one JSON and one markdown table, so that the first hour on a GPU
answers "does each stage run, how fast, in how much memory" without downloading anything. Sections:

- `pretrain`: OLMo-1B-shape (d 2048, 16 layers, 16 heads, MLP ratio 8, vocabulary 50,304) training steps
  through `runtime.pretrain.olmo_train.train_step`, amp_bf16 on CUDA, wrapped in DDP and in FSDP on a one-process
  group (`runtime.pretrain.olmo_train.build_model`); tokens/s and MFU by `runtime.pretrain.throughput`;
- `generate`: the evaluate stage's sampler (`runtime.generate.sample_continuations`) at the paper's 25 samples
  per prompt on ~250-token prompts, against HF `generate(num_return_sequences=25)` (bench/eval_throughput.py's
  paths and token counter); tokens/s, memory high-water mark and `batch_bytes`' estimate of it;
- `gcg`: the time of one `runtime.attack.gcg.gcg_attack` step at the spec's defaults (20-token suffix, 512
  candidates, top-256), early stop off;
- `probe`: the batched probe fit (`runtime.probe.fit.fit_probes`, `implementation="batched"`) of 16 × 16
  heads of 128 features on the device (bench/probe_speed.py's synthetic problem);
- `classifier`: `runtime.scoring.classifier.HFClassifierScorer` on a random RoBERTa-large-shape classifier
  (24 layers, d 1024) saved to a temporary folder, placed by `runtime.device.place` (bf16 on CUDA).

On CUDA models compute in bf16, on CPU in fp32. `--shrink` makes every shape tiny (the CPU test runs it).
Each section is guarded: a failure is recorded as its error text and the others still run; the exit status
is 1 when any section failed.

    python bench/gpu_check.py --out /tmp/gpu_check [--shrink] [--sections pretrain generate gcg probe classifier]
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compiler.schema.precision import Compute  # noqa: E402
from runtime.device import Placement, place  # noqa: E402

if TYPE_CHECKING:
    from runtime.pretrain.process_group import Runtime

SECTIONS = ("pretrain", "generate", "gcg", "probe", "classifier")

FULL = dict(
    olmo=dict(preset="olmo-1b"), vocab=50304, seq=2048, batch=8, micro=4, train_steps=4,
    prompts=32, prompt_tokens=250, samples=25, new_tokens=20, gen_batch=16, rounds=2,
    gcg=dict(suffix_tokens=20, steps=3, candidates_per_step=512, top_k_tokens=256),
    probe=dict(examples=2000, layers=16, heads=16, head_dim=128),
    classifier=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    texts=2048, classifier_batch=64,
)
SHRUNK = dict(
    olmo=dict(preset="tiny", d_model=32, n_heads=2, n_layers=2, max_sequence_length=32), vocab=512, seq=32,
    batch=4, micro=2, train_steps=2,
    prompts=3, prompt_tokens=12, samples=3, new_tokens=4, gen_batch=2, rounds=1,
    gcg=dict(suffix_tokens=3, steps=2, candidates_per_step=8, top_k_tokens=8),
    probe=dict(examples=120, layers=2, heads=2, head_dim=8),
    classifier=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    texts=16, classifier_batch=8,
)


class Section:
    """One section's rows (measure, value, unit) and the extras its JSON entry keeps."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float | int | str, str]] = []
        self.info: dict[str, Any] = {}

    def add(self, measure: str, value: float | int | str, unit: str) -> None:
        self.rows.append((measure, value, unit))


def compute_here() -> Compute:
    """bf16 on CUDA, fp32 on CPU: the precision policy's default placement."""
    return Compute(device="cuda", precision="bf16") if torch.cuda.is_available() else Compute()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> tuple[int, str]:
    """The memory high-water mark and what it is: allocated tensors on CUDA (since the last reset), the
    whole process's resident set on CPU (never reset: an upper bound for what ran since the start)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process max RSS (getrusage)"


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- pretraining ---------------------------------------------------------------------------------

def train_config(shape: dict[str, Any], strategy: str, precision: str):
    """The ai2-olmo TrainConfig the pretrain stage would build for this shape (runtime.pretrain)."""
    from compiler.schema.data import TokenizerInfo
    from compiler.schema.model import ModelSection
    from compiler.schema.pretrain import PretrainSection
    from runtime.pretrain import Config, build_train_config

    cfg = Config(
        model=ModelSection(**shape["olmo"]),
        vocab=TokenizerInfo(identifier="gpu-check", vocab_size=shape["vocab"], embedding_size=shape["vocab"],
                            eos_token_id=0, pad_token_id=1),
        train=PretrainSection(sequence_length=shape["seq"], global_batch_size=shape["batch"],
                              device_microbatch_size=shape["micro"], precision=precision,
                              distributed_strategy=strategy, warmup_fraction=0.0),
        max_steps=shape["train_steps"] + 1, seed=0,
    )
    return build_train_config(cfg, data_paths=[], tokenizer_file="unused", save_folder="unused",
                              world_size=1, precision=precision, run_name="gpu-check")


def one_process_group(device: torch.device, folder: Path) -> None:
    """A process group of one rank (NCCL on CUDA, gloo on CPU), as `torchrun --nproc-per-node=1` would give."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                init_method=f"file://{folder / 'process-group'}", rank=0, world_size=1)


def check_pretrain(shape: dict[str, Any], device: torch.device, work: Path, out: Section) -> None:
    import torch.distributed as dist

    from runtime.pretrain.process_group import Runtime

    if device.type == "cuda":  # DDP's device_ids and FSDP's device_id want an indexed device
        device = torch.device("cuda", torch.cuda.current_device())
    rt = Runtime(device=device, rank=0, local_rank=device.index or 0, world_size=1)
    one_process_group(device, work)
    try:
        for strategy in ("ddp", "fsdp"):
            time_strategy(shape, strategy, rt, out)
            free_memory()
    finally:
        dist.destroy_process_group()


def time_strategy(shape: dict[str, Any], strategy: str, rt: "Runtime", out: Section) -> None:
    """A few `train_step`s of the model wrapped by `strategy`; the first one warms up (allocator, kernels,
    FSDP's flat parameters) and is not timed."""
    from olmo.optim import build_optimizer, build_scheduler

    from runtime.pretrain.olmo_train import build_model, train_step
    from runtime.pretrain.throughput import Throughput, peak_flops

    device, steps, tokens = rt.device, shape["train_steps"], shape["batch"] * shape["seq"]
    cfg = train_config(shape, strategy, "amp_bf16" if device.type == "cuda" else "fp32")
    # build_model wraps only when world_size > 1 (one process trains unwrapped); asked here as if there
    # were ranks, it wraps in DDP/FSDP over the one-rank group, so the wrapper's cost is measured.
    built = build_model(cfg, dataclasses.replace(rt, world_size=2))
    optim, sched = build_optimizer(cfg, built.model), build_scheduler(cfg)
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(2, shape["vocab"], (shape["batch"], shape["seq"]), generator=gen)}
               for _ in range(steps + 1)]
    meter = Throughput(steps, tokens, built.flops_per_token, peak_flops(device, str(cfg.precision)))
    built.model.train()
    reset_peak(device)
    losses = []
    for step, batch in enumerate(batches, start=1):
        sync(device)
        tic = time.perf_counter()
        losses.append(train_step(cfg, rt, built.model, optim, sched, batch, step, steps + 1)["loss"])
        sync(device)
        if step > 1:
            meter.record(time.perf_counter() - tic)
    peak, what = peak_bytes(device)
    out.add(f"{strategy} tokens/s", meter.tokens_per_second(), "tokens/s")
    out.add(f"{strategy} step time", tokens / meter.tokens_per_second(), "s")
    if (mfu := meter.mfu()) is not None:
        out.add(f"{strategy} MFU", mfu, "fraction")
    out.add(f"{strategy} peak memory", peak / 2 ** 30, "GiB")
    out.info[strategy] = {"losses": losses, "peak_memory_is": what, "n_params": built.n_params,
                          "flops_per_token": built.flops_per_token, "precision": str(cfg.precision),
                          "tokens_per_step": tokens, "timed_steps": steps}


# --- generation, GCG -----------------------------------------------------------------------------

def hf_olmo(shape: dict[str, Any], placement: Placement, tok):
    """A random HF OLMo of the pretrain stage's exported shape (runtime.pretrain.hf_export.hf_config) and the
    tokenizer's 50,304-row embedding, on the placement's device and dtype."""
    from transformers import OlmoForCausalLM

    from runtime.pretrain.hf_export import hf_config

    cfg = train_config({**shape, "vocab": 50304}, "single", "fp32").model
    config = hf_config(cfg)
    config.max_position_embeddings = max(config.max_position_embeddings,
                                         shape["prompt_tokens"] + shape["gcg"]["suffix_tokens"] + 64)
    config.pad_token_id, config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    torch.manual_seed(0)
    with placement.device:
        model = OlmoForCausalLM(config)
    return model.to(placement.dtype).eval()


def long_prompts(tok, n: int, tokens: int) -> list[str]:
    """`n` prompts of about `tokens` tokens each, cut from the demo prompts' text run together."""
    rows = (ROOT / "data" / "demo" / "prompts.jsonl").read_text().splitlines()
    ids = tok(" ".join(json.loads(r)["text"] for r in rows), add_special_tokens=False)["input_ids"]
    while len(ids) < n * tokens:
        ids = ids + ids
    return [tok.decode(ids[i * tokens:(i + 1) * tokens]) for i in range(n)]


def check_generate(shape: dict[str, Any], placement: Placement, out: Section) -> None:
    from bench.eval_throughput import TokenCounter, hf_batched, olmo_tokenizer, per_row_seeded, timed
    from runtime import generate as generate_module
    from runtime.generate import Sampling, batch_bytes, plan_batches

    tok = olmo_tokenizer()
    model = hf_olmo(shape, placement, tok)
    device = placement.device
    prompts = long_prompts(tok, shape["prompts"], shape["prompt_tokens"])
    a = Namespace(samples=shape["samples"], new_tokens=shape["new_tokens"], batch_size=shape["gen_batch"], top_k=0)
    s = Sampling(a.samples, a.new_tokens, 1.0, 0.9, a.batch_size, seed=0)
    plan = plan_batches(model, tok, prompts, s)
    longest = max(len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"])
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    counter = TokenCounter(model)  # wraps runtime.generate._decode until the finally below
    paths = {"sample_continuations": lambda batch: per_row_seeded(model, tok, batch, a),
             "HF generate": lambda batch: hf_batched(model, tok, batch, a)}
    try:
        for name, fn in paths.items():
            fn(prompts[:a.batch_size])  # warm-up on one batch
            free_memory()
            reset_peak(device)
            rates = [timed(model, counter, lambda: fn(prompts)) for _ in range(shape["rounds"])]
            peak, what = peak_bytes(device)
            out.add(f"{name} tokens/s", float(np.median(rates)), "tokens/s")
            out.add(f"{name} peak memory", peak / 2 ** 30, "GiB")
            out.info[name] = {"rates": rates, "peak_memory_is": what, "new_tokens_per_round": counter.tokens}
    finally:
        generate_module._decode = counter.decode
    ours, ref = (out.info[k]["rates"] for k in ("sample_continuations", "HF generate"))
    out.add("speed-up over HF generate", float(np.median(ours) / np.median(ref)), "x")
    out.add("batch_bytes estimate + weights", (max(batch_bytes(model, n, longest, s) for n in plan) + weights)
            / 2 ** 30, "GiB")
    out.info.update(plan=plan, prompt_tokens=longest, prompts=len(prompts), samples=s.samples_per_prompt,
                    max_new_tokens=s.max_new_tokens, weights_bytes=weights)
    del model, counter
    free_memory()


def check_gcg(shape: dict[str, Any], placement: Placement, out: Section) -> None:
    from bench.eval_throughput import olmo_tokenizer
    from runtime.attack.gcg import GCGSettings, gcg_attack

    tok = olmo_tokenizer()
    model = hf_olmo(shape, placement, tok)
    g = shape["gcg"]
    settings = GCGSettings(**g, early_stop=False)
    stamps: list[float] = []

    def stamp(_state) -> None:
        sync(placement.device)
        stamps.append(time.perf_counter())

    prompt = "Write a short reply to the comment below, in the same tone as the comment."
    sync(placement.device)
    start = time.perf_counter()
    result = gcg_attack(model, tok, prompt, "you stupid idiot", settings, seed=0, after_step=stamp)
    step_times = np.diff([start] + stamps)
    timed = step_times[1:] if len(step_times) > 1 else step_times  # the first step carries the start's warm-up
    out.add("step time", float(np.median(timed)), "s")
    out.add("steps run", result.steps_run, "steps")
    out.info.update(settings=dataclasses.asdict(settings), step_times=step_times.tolist(),
                    losses=result.current_losses)
    del model
    free_memory()


# --- probe, classifier ---------------------------------------------------------------------------

def check_probe(shape: dict[str, Any], placement: Placement, out: Section) -> None:
    from bench.probe_speed import planted_activations
    from runtime.probe.fit import fit_probes

    p = shape["probe"]
    groups = p["layers"] * p["heads"]
    x, y, _ = planted_activations(p["examples"], p["layers"], p["heads"], p["head_dim"], max(1, groups // 10),
                                  (0.02, 0.2), 0)
    order = np.random.default_rng(1).permutation(p["examples"])
    train, val = order[:int(0.8 * p["examples"])], order[int(0.8 * p["examples"]):]
    kw = dict(standardize=False, l2_penalty=1.0, max_iterations=1000, tolerance=1e-6, implementation="batched",
              device=placement.device.type, progress=False)
    seconds = []
    for _ in range(2):  # the first call carries CUDA's start-up
        sync(placement.device)
        tic = time.perf_counter()
        fit = fit_probes(x, y, train, val, **kw)
        sync(placement.device)
        seconds.append(time.perf_counter() - tic)
    out.add("fit time (all heads)", seconds[1], "s")
    out.add("first call", seconds[0], "s")
    out.add("best validation accuracy", float(fit.val_accuracy.max()), "fraction")
    out.info.update(heads=groups, examples=p["examples"], head_dim=p["head_dim"],
                    max_iterations_run=int(fit.iterations.max()))


def check_classifier(shape: dict[str, Any], compute: Compute, work: Path, out: Section) -> None:
    from bench.score_throughput import demo_texts, save_classifier
    from compiler.schema.scoring import ClassifierScorer
    from runtime.scoring.classifier import HFClassifierScorer

    save_classifier(work / "classifier", shape["classifier"])
    spec = ClassifierScorer(path="classifier", toxic_labels=["toxic"], batch_size=shape["classifier_batch"])
    placement = place(compute, "score")
    scorer = HFClassifierScorer(spec, work, placement, progress=False)
    texts = demo_texts()
    texts = (texts * (shape["texts"] // len(texts) + 1))[:shape["texts"]]
    scorer.score(texts[:spec.batch_size])  # warm-up
    reset_peak(placement.device)
    sync(placement.device)
    tic = time.perf_counter()
    scores = scorer.score(texts)
    sync(placement.device)
    seconds = time.perf_counter() - tic
    peak, what = peak_bytes(placement.device)
    out.add("texts/s", len(texts) / seconds, "texts/s")
    out.add("peak memory", peak / 2 ** 30, "GiB")
    out.add("scores in [0, 1]", str(all(0.0 <= x <= 1.0 for x in scores)), "")
    out.info.update(texts=len(texts), dtype=str(scorer.model.dtype), peak_memory_is=what,
                    max_length=scorer.max_length)
    del scorer
    free_memory()


# --- the report ----------------------------------------------------------------------------------

def environment(compute: Compute) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "cuda": torch.version.cuda,
                           "compute": compute.label, "platform": platform.platform()}
    try:
        from importlib.metadata import version

        env["ai2-olmo"] = version("ai2-olmo")
    except Exception as exc:  # the check still runs; say why the version is missing
        env["ai2-olmo"] = f"unknown ({exc!r})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), device_memory_gib=props.total_memory / 2 ** 30,
                   cudnn=torch.backends.cudnn.version())
    else:
        env["device"] = "cpu"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    env["git_commit"] = commit.stdout.strip() or None
    return env


def markdown(results: dict[str, Any]) -> str:
    lines = ["| section | measure | value | unit |", "|---|---|---|---|"]
    for name, section in results["sections"].items():
        if "error" in section:
            lines.append(f"| {name} | FAILED | {section['error'].splitlines()[-1]} | |")
        for row in section.get("rows", []):
            value = f"{row['value']:.4g}" if isinstance(row["value"], float) else str(row["value"])
            lines.append(f"| {name} | {row['measure']} | {value} | {row['unit']} |")
    return "\n".join(lines) + "\n"


def run(sections: list[str], shrink: bool, work: Path, micro_batch: int | None = None) -> dict[str, Any]:
    """Every asked section, each guarded; the JSON-ready results."""
    shape = SHRUNK if shrink else FULL
    if micro_batch is not None:
        shape = {**shape, "micro": micro_batch}
    compute = compute_here()
    placement = place(compute, "gpu-check")
    checks: dict[str, Callable[[Section], None]] = {
        "pretrain": lambda s: check_pretrain(shape, placement.device, work, s),
        "generate": lambda s: check_generate(shape, placement, s),
        "gcg": lambda s: check_gcg(shape, placement, s),
        "probe": lambda s: check_probe(shape, placement, s),
        "classifier": lambda s: check_classifier(shape, compute, work, s),
    }
    results: dict[str, Any] = {"environment": environment(compute), "shrink": shrink, "sections": {}}
    for name in sections:
        section, tic = Section(), time.perf_counter()
        entry: dict[str, Any] = {}
        try:
            checks[name](section)
        except Exception:
            entry["error"] = traceback.format_exc()
        free_memory()
        entry.update(rows=[{"measure": m, "value": v, "unit": u} for m, v, u in section.rows],
                     info=section.info, seconds=time.perf_counter() - tic)
        results["sections"][name] = entry
        print(f"{name}: {'FAILED' if 'error' in entry else 'ok'} in {entry['seconds']:.1f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--shrink", action="store_true", help="tiny shapes everywhere (seconds on a CPU)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--micro-batch", type=int, default=None,
                    help=f"pretrain sequences per forward pass (default {FULL['micro']}; lower it on an out-of-memory)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.sections, args.shrink, Path(tmp), args.micro_batch)
    table = markdown(results)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "gpu_check.md").write_text(table)
    print(table)
    return 1 if any("error" in s for s in results["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
