"""`steer.positions`: `last` shifts only the last position of a forward call (so a cached generation
shifts the prompt's last token and every new token), `all` every position; `steer_from` widens `last` to
every position from a given column, for teacher-forced scoring."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from runtime.intervention import INTERVENTION_FILE, LastPositionHooks, add_shift_hooks, layer_shifts, load_intervention, steer_from
from runtime.generate import load_model

sys.path.insert(0, str(Path(__file__).parent))
from test_steer import KIND, TOXIC, load, random_probe, run_steer  # noqa: E402

PROMPTS = ["you are a stupid idiot and", "thank you"]


@pytest.fixture(scope="module")
def steered(tmp_path_factory, tiny_model_dir):
    """(unsteered, `last` model via load_model, `all` folded model, the intervention, tokenizer)."""
    tmp = tmp_path_factory.mktemp("positions")
    probe = random_probe(tmp / "probe")
    last_out, _ = run_steer(tmp, tiny_model_dir, probe, out="last", top_k_heads=5, alpha=6.0, positions="last")
    all_out, _ = run_steer(tmp, tiny_model_dir, probe, out="all", top_k_heads=5, alpha=6.0, positions="all")
    base, tok = load_model(tiny_model_dir / "model")
    last, _ = load_model(last_out / "model")
    folded, _ = load_model(all_out / "model")
    return base, last, folded, load_intervention(last_out / "intervention.json"), tok


def reference_hooks(model, intervention, first_column: int) -> list:
    """Written out here, independent of `runtime.intervention`'s hooks: shift columns >= first_column."""
    def hook(shift):
        def pre_hook(module, args):
            x = args[0].clone()
            x[:, first_column:] += shift
            return (x, *args[1:])
        return pre_hook
    return [model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(hook(shift))
            for layer, shift in layer_shifts(intervention).items()]


@torch.no_grad()
def hidden_states(model, tok, texts=TOXIC + KIND) -> tuple[torch.Tensor, torch.Tensor]:
    """Every layer's hidden states [layers + 1, B, T, D] of left-padded texts, and the logits."""
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True)
    pos = (enc["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    out = model(**enc, position_ids=pos, output_hidden_states=True)
    return torch.stack(out.hidden_states), out.logits


def test_last_writes_unsteered_weights_and_an_intervention_file(steered, tiny_model_dir):
    base, last, _, intervention, _ = steered
    assert intervention["positions"] == "last"
    for (name, p), (_, q) in zip(base.named_parameters(), last.named_parameters()):
        assert torch.equal(p, q), name
    assert getattr(last, LastPositionHooks.ATTR).handles


def test_last_leaves_every_earlier_position_unchanged(steered):
    base, last, _, _, tok = steered
    h_base, _ = hidden_states(base, tok)
    h_last, _ = hidden_states(last, tok)
    assert torch.equal(h_last[:, :, :-1], h_base[:, :, :-1])  # every layer, every earlier position
    assert (h_last[-1, :, -1] - h_base[-1, :, -1]).abs().amax(-1).min() > 1e-3  # each text's last moves


def test_folded_all_equals_hooks_at_every_position(steered):
    base, last, folded, intervention, tok = steered
    _, folded_logits = hidden_states(folded, tok)
    with steer_from(last, None):
        _, last_everywhere = hidden_states(last, tok)
    handles = add_shift_hooks(base, intervention)
    _, hooked = hidden_states(base, tok)
    for h in handles:
        h.remove()
    assert (folded_logits - hooked).abs().max() <= 1e-5
    assert (last_everywhere - hooked).abs().max() <= 1e-5
    _, plain = hidden_states(last, tok)  # steer_from restored the default on exit
    assert not torch.allclose(plain, last_everywhere)


def test_steer_from_shifts_each_row_from_its_start(steered):
    base, last, _, intervention, tok = steered
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    starts = torch.tensor([3, 5])
    with torch.no_grad(), steer_from(last, starts):
        got = last(**enc).logits
    for row, start in enumerate(starts.tolist()):
        handles = reference_hooks(base, intervention, start)
        with torch.no_grad():
            want = base(**enc).logits[row]
        for h in handles:
            h.remove()
        assert (got[row] - want).abs().max() <= 1e-5
    with steer_from(base, starts):  # a model without last hooks: no-op
        with torch.no_grad():
            assert torch.equal(base(**enc).logits, base(**enc).logits)


@torch.no_grad()
def test_cached_generation_shifts_prompt_last_and_each_new_token(steered):
    """`generate` with the KV cache == a no-cache loop whose hooks shift the prompt's last column and
    every column after it, greedy token by token (left-padded batch of two prompts)."""
    base, last, _, intervention, tok = steered
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    new = 6
    out = last.generate(**enc, do_sample=False, max_new_tokens=new, min_new_tokens=new, use_cache=True,
                        pad_token_id=tok.pad_token_id, output_scores=True, return_dict_in_generate=True)
    prompt_len = enc["input_ids"].shape[1]
    ids, mask = enc["input_ids"], enc["attention_mask"]
    handles = reference_hooks(base, intervention, prompt_len - 1)
    try:
        for step in range(new):
            logits = base(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0),
                          use_cache=False).logits[:, -1]
            logits[:, tok.eos_token_id] = float("-inf")  # as min_new_tokens does
            assert (logits - out.scores[step]).nan_to_num(posinf=0.0).abs().max() <= 1e-4
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(ids, out.sequences)
    unsteered = base.generate(**enc, do_sample=False, max_new_tokens=new, min_new_tokens=new,
                              pad_token_id=tok.pad_token_id, output_scores=True, return_dict_in_generate=True)
    assert max((a - b).nan_to_num().abs().max() for a, b in zip(unsteered.scores, out.scores)) > 1e-3


def test_load_model_refuses_a_bad_intervention_file(steered, tmp_path, tiny_model_dir):
    import json
    import shutil

    from compiler.errors import StageError

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir / "model", folder)
    _, _, _, intervention, _ = steered
    (folder / INTERVENTION_FILE).write_text(json.dumps(intervention | {"positions": "all"}))
    with pytest.raises(StageError, match="intervention.json"):
        load_model(folder)
    assert AutoTokenizer.from_pretrained(folder)  # the folder itself stays a normal checkpoint


def test_hooks_follow_a_model_cast_after_loading(tmp_path, tiny_model_dir, steered):
    """A `last`-steered model cast to bf16 after its hooks were added (attack's `runtime.device` placement)
    runs, and its logits stay within bf16 rounding of the fp32 model's."""
    _, last, _, _, tok = steered
    probe = random_probe(tmp_path / "probe")
    out, _ = run_steer(tmp_path, tiny_model_dir, probe, out="last", top_k_heads=5, alpha=6.0, positions="last")
    cast, _ = load_model(out / "model")
    cast.to(torch.bfloat16)
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        want = last(**enc).logits
        got = cast(**enc).logits.float()
        with steer_from(cast, 0):
            assert cast(**enc).logits.dtype == torch.bfloat16
    assert (got - want).abs().max() <= 0.05 * want.abs().max()
