"""`activations` stage: per-head attention outputs and residual streams on labelled texts.

Reads: a model folder (`ctx.inputs["model"] / "model"`, HF causal LM + tokenizer) and labelled probe
data (`cfg.data`). Writes `activations.safetensors` — `heads` float32 [N, L, H, Dh] (the input of
each probed layer's `self_attn.o_proj`, split per head), `resid` float32 [N, L, D] (the residual
stream after each probed layer), `labels` int64 [N], `layers` int64 [L] (model layer indices) — and
`examples.jsonl` (index, text, label, group, attributes; same order). The texts come through the
source's reader (`runtime.sources`: dotted fields, cleaning, filters, sampling); its counts are the
metrics `source_probe_<count>` (records read, skipped, filtered, sampled out, kept).

One token position per text: `last` (the last non-pad token) or `mean` (mean over non-pad tokens).
Texts are batched with padding, sorted by length to waste little compute; position ids follow the
attention mask, so neither padding side changes a result (tested). Everything in `Config` changes the
id except `batch_size`; the stage is cached per (model, data, position), so probe configs share it.
"""
from __future__ import annotations

import json

from compiler.errors import StageError
from compiler.stages.activations import Config
from runtime.artifacts import load_causal_lm, load_tokenizer
from runtime.sources.labelled import load_examples
from runtime.stage import StageContext


RESTART = "one forward pass of the model over the probe texts"
"""Why a stopped run starts over (`runtime.preempt.stage_stops` logs it on the rerun)."""


def run(cfg: Config, ctx: StageContext) -> dict:
    import torch
    from safetensors.torch import save_file

    from runtime.device import place

    torch.set_num_threads(max(1, ctx.threads))
    from runtime.sources import SourceCounts

    counts = SourceCounts()
    examples = load_examples(cfg.data, ctx, counts)
    model_dir = ctx.input("model") / "model"
    tokenizer = load_tokenizer(model_dir)
    placement = place(cfg.compute, "activations")
    model = load_causal_lm(model_dir, **placement.load_kwargs()).to(placement.device).eval()
    n_layers = model.config.num_hidden_layers
    layers = list(cfg.layers)
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise StageError(f"activations: layers {bad} do not exist (the model has {n_layers})")
    heads, resid, n_tokens = extract(
        model, tokenizer, [e["text"] for e in examples], layers=layers,
        position=cfg.token_position, max_length=cfg.max_length_tokens, batch_size=cfg.batch_size,
    )
    labels = torch.tensor([e["label"] for e in examples], dtype=torch.int64)
    save_file({"heads": heads, "resid": resid, "labels": labels,
               "layers": torch.tensor(layers, dtype=torch.int64)},
              str(ctx.out / "activations.safetensors"))
    with open(ctx.out / "examples.jsonl", "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    return {
        "n_examples": len(examples), "n_toxic": int(labels.sum()),
        "toxic_share": float(labels.float().mean()), "n_layers": len(layers),
        "n_heads": heads.shape[2], "head_dim": heads.shape[3], "d_model": resid.shape[2],
        "mean_tokens": float(n_tokens.float().mean()),
        "n_truncated": int((n_tokens >= cfg.max_length_tokens).sum()), "computed_in": placement.compute.label,
        **counts.metrics("probe"),
    }


def extract(model, tokenizer, texts: list[str], *, layers: list[int], position: str, max_length: int,
            batch_size: int, padding_side: str = "right", progress: bool = True):
    """Per-head o_proj inputs [N, L, H, Dh] and residuals [N, L, D] at `position`, plus token counts."""
    import torch
    from tqdm.auto import tqdm

    cfg = model.config
    n_heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    decoder = model.get_decoder()
    blocks = [decoder.layers[i] for i in layers]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    if min(lengths, default=1) == 0:
        raise StageError(f"activations: text {lengths.index(0)} has no tokens")
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    heads = torch.empty(len(texts), len(layers), n_heads, head_dim)
    resid = torch.empty(len(texts), len(layers), cfg.hidden_size)
    captured: dict[tuple[str, int], torch.Tensor] = {}

    def o_proj_input(k):
        return lambda module, args: captured.__setitem__(("heads", k), args[0])

    def layer_output(k):
        return lambda module, args, output: captured.__setitem__(
            ("resid", k), output[0] if isinstance(output, tuple) else output)

    hooks = [b.self_attn.o_proj.register_forward_pre_hook(o_proj_input(k)) for k, b in enumerate(blocks)]
    hooks += [b.register_forward_hook(layer_output(k)) for k, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(texts), batch_size), desc="activations", disable=not progress):
                rows = order[start:start + batch_size]
                enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt").to(device)
                mask = enc["attention_mask"]
                positions = (mask.cumsum(-1) - 1).clamp_min(0)
                decoder(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions,
                        use_cache=False)
                for k in range(len(layers)):
                    h = _pool(captured["heads", k].float(), mask, position)  # pooled in fp32 (a bf16 mean drifts)
                    heads[rows, k] = h.view(len(rows), n_heads, head_dim).cpu()
                    resid[rows, k] = _pool(captured["resid", k].float(), mask, position).cpu()
                captured.clear()
    finally:
        for h in hooks:
            h.remove()
    return heads, resid, torch.tensor(lengths)


def _pool(x, mask, position: str):
    """[B, T, F] → [B, F]: the last non-pad token, or the mean over non-pad tokens (pads ignored)."""
    import torch

    if position == "last":
        t = x.shape[1]
        last = torch.where(mask.bool(), torch.arange(t, device=x.device), -1).amax(-1)
        return x[torch.arange(x.shape[0], device=x.device), last]
    keep = mask.bool().unsqueeze(-1)
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(1) \
        / keep.sum(1).to(x.dtype)
