"""The paper spec compiles to an ai2-olmo TrainConfig whose model is the official OLMo-1B one."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# model section of allenai/OLMo configs/official/OLMo-1B.yaml
OFFICIAL_OLMO_1B = dict(
    d_model=2048, n_heads=16, n_layers=16, mlp_ratio=8, weight_tying=True, alibi=False, rope=True,
    attention_dropout=0.0, attention_layer_norm=False, multi_query_attention=False, include_bias=False,
    block_type="sequential", layer_norm_type="default", layer_norm_with_affine=False,
    bias_for_layer_norm=False, attention_layer_norm_with_affine=False, activation_type="swiglu",
    residual_dropout=0.0, embedding_dropout=0.0, max_sequence_length=2048, vocab_size=50280,
    embedding_size=50304, eos_token_id=50279, pad_token_id=1, init_fn="mitchell",
)


def test_paper_spec_pretrain_is_official_olmo_1b(tmp_path):
    from olmo.config import TrainConfig

    from compiler.workflow import compile_spec
    from runtime.pretrain import build_train_config

    plan = compile_spec(Path("specs/bad_data_good_models.yaml"), ROOT)
    cfg = next(i.config for i in plan.instances.values() if i.kind == "pretrain")
    train = build_train_config(cfg, data_paths=[tmp_path / "part-00000.npy"], tokenizer_file=tmp_path / "t.json",
                               save_folder=tmp_path / "save", world_size=16, precision="amp_bf16", run_name="x")
    train.save(tmp_path / "config.yaml")
    loaded = TrainConfig.load(tmp_path / "config.yaml")
    model = loaded.model
    assert {k: getattr(model, k) for k in OFFICIAL_OLMO_1B} == OFFICIAL_OLMO_1B
    opt = loaded.optimizer
    assert (str(opt.name).split(".")[-1].lower(), opt.learning_rate, opt.weight_decay, tuple(opt.betas)) == \
        ("adamw", 4.0e-4, 0.1, (0.9, 0.95))
    assert loaded.max_grad_norm == 1.0 and loaded.scheduler.alpha_f == 0.1 and opt.eps == 1e-5
    assert loaded.distributed_strategy == "ddp" and loaded.device_train_microbatch_size == 8
