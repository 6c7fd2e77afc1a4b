"""Token view known answer: a model whose top heads carry a planted direction at one token only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from runtime.report import token_view

TEXT = "you are a stupid idiot and i hate you"
OTHER = "thank you for the kind and helpful answer"
N_HEADS, HEAD_DIM, PLANTED = 8, 8, 5


def _offsets(tok, text):
    return tok(text, return_offsets_mapping=True)["offset_mapping"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(model folder, probe folder, index of the planted token in TEXT).

    One layer, q_proj = 0 so every head attends uniformly to the prefix; heads 0–4 get a value
    projection that is c·d_h along a direction e seen only at the first token of 'stupid' (e is that token's
    normalised input minus its projection on the other tokens' inputs). So head h's output is 0 before
    that token, c·d_h·k/(t+1) at and after position t* ... largest at t*. Heads 5–7 stay random and
    get low probe accuracy."""
    from conftest import save_tiny_hf_model
    from safetensors.numpy import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = tmp_path_factory.mktemp("token_view")
    folder = save_tiny_hf_model(tmp / "pretrain", n_layers=1, n_heads=N_HEADS, d_model=N_HEADS * HEAD_DIM)
    model_dir = folder / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    char = TEXT.index("stupid")  # the planted token: the one holding the s of "stupid"
    target = next(i for i, (s, e) in enumerate(_offsets(tok, TEXT)) if s <= char < e)
    assert (ids[0] == ids[0, target]).sum() == 1
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        x = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))[0]  # [T, D]
        others = x[ids[0] != ids[0, target]]
        q, _ = torch.linalg.qr(others.T)
        e = x[target] - q @ (q.T @ x[target])
        e = e / e.norm()
        rng = np.random.default_rng(0)
        d = rng.normal(size=(N_HEADS, HEAD_DIM)).astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        attn.q_proj.weight.zero_()
        for h in range(PLANTED):
            attn.v_proj.weight[h * HEAD_DIM:(h + 1) * HEAD_DIM] = 10.0 * torch.outer(torch.from_numpy(d[h]), e)
    model.save_pretrained(model_dir)

    probe = tmp / "probe"
    probe.mkdir()
    acc = [[0.9 - 0.01 * h if h < PLANTED else 0.55 for h in range(N_HEADS)]]
    ranking = [[0, h] for h in sorted(range(N_HEADS), key=lambda h: (-acc[0][h], -h))]
    (probe / "accuracy.json").write_text(json.dumps({"head_accuracy": acc, "layer_accuracy": [0.9],
                                                     "layers": [0], "head_ranking": ranking}))
    save_file({"probe_weight": d[None], "mass_mean": d[None], "std_probe_weight": np.ones((1, N_HEADS), np.float32),
               "std_mass_mean": np.ones((1, N_HEADS), np.float32)}, str(probe / "directions.safetensors"))
    return model_dir, probe, target


def test_planted_token_lights_up_highest(planted):
    from transformers import AutoTokenizer

    model_dir, probe, target = planted
    view, other = token_view.model_views(model_dir, probe, [TEXT, OTHER], top_k=PLANTED)
    assert int(np.argmax(view["scores"])) == target
    start, end = _offsets(AutoTokenizer.from_pretrained(model_dir), TEXT)[target]
    assert view["top_token"] == TEXT[start:end]
    assert view["scores"][:target].max() < view["scores"][target]
    assert np.all((view["scores"] > 0) & (view["scores"] < 1))
    assert other["scores"].max() < view["scores"][target]


def test_sign_flipped_probe_makes_it_the_lowest(planted, tmp_path):
    """A probe pointing away from toxic turns the same token into the least toxic-looking one."""
    from safetensors.numpy import load_file, save_file

    model_dir, probe, target = planted
    flipped = tmp_path / "probe"
    flipped.mkdir()
    (flipped / "accuracy.json").write_text((probe / "accuracy.json").read_text())
    t = load_file(str(probe / "directions.safetensors"))
    save_file(t | {"probe_weight": -t["probe_weight"]}, str(flipped / "directions.safetensors"))
    (view,) = token_view.model_views(model_dir, flipped, [TEXT], top_k=PLANTED)
    assert int(np.argmin(view["scores"])) == target


def test_spans_rebuild_the_text_exactly(planted):
    model_dir, probe, _ = planted
    hostile = 'a <b>bold</b> "quote" & <script>x</script>'
    for text in (TEXT, hostile):
        (view,) = token_view.model_views(model_dir, probe, [text], top_k=PLANTED)
        assert "".join(s["text"] for s in view["spans"]) == text
        scored = [s for s in view["spans"] if s["score"]]
        assert len(scored) == len(view["scores"])


def test_report_page_shows_escaped_token_view(planted, tmp_path):
    """The full report with a token view: the text is escaped, every token is a coloured span."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_report import make_cfg, make_ctx

    from runtime import report

    model_dir, probe, _ = planted
    (probe / "metrics.json").write_text(json.dumps({"best_head_accuracy": 0.9}))
    (model_dir.parent / "metrics.json").write_text(json.dumps({"final_loss": 1.0}))
    row = {"run": "r", "axes": {}, "seed": 0, "toxic_share": 0.1, "pretrain": "pretrain-x", "mix": None,
           "probe": "probe-x", "toy": None, "alpha": None, "variant": None, "evaluate": None, "attack": None}
    ctx = make_ctx(tmp_path, {"pretrain-x": model_dir.parent, "probe-x": probe})
    hostile = "<script>alert(1)</script> stupid"
    metrics = report.run(make_cfg([row], token_view_texts=[TEXT, hostile]), ctx)
    assert metrics["n_token_views"] == 2
    html = (ctx.out / "index.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count('<span style="background-color: #') >= 9
