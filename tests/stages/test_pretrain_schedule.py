"""The learning-rate schedule and optimizer the compiled ai2-olmo TrainConfig carries are the spec's, in
each run's own steps: the same warmup share and full decay for toxic shares of different token counts, and
the demo's schedule exactly what it was before the schedule became fractions and tokens."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compiled_train_configs(spec: str, tmp_path: Path) -> list:
    """(stage config, ai2-olmo TrainConfig saved and loaded back) of every pretrain instance of `spec`."""
    from olmo.config import TrainConfig

    from compiler.workflow import compile_spec
    from runtime.pretrain import build_train_config

    plan = compile_spec(Path(spec), ROOT)
    out = []
    for n, inst in enumerate(i for i in plan.instances.values() if i.kind == "pretrain"):
        cfg = inst.config
        built = build_train_config(cfg, data_paths=[tmp_path / "part.npy"], tokenizer_file=tmp_path / "t.json",
                                   save_folder=tmp_path / "save", world_size=1, precision=cfg.train.precision,
                                   run_name="x")
        built.save(tmp_path / f"{n}.yaml")
        out.append((cfg, TrainConfig.load(tmp_path / f"{n}.yaml")))
    return out


def lr_curve(train_cfg, max_steps: int) -> list[float]:
    from olmo.optim import build_scheduler

    scheduler = build_scheduler(train_cfg)
    return [scheduler.get_lr(train_cfg.optimizer.learning_rate, s, max_steps) for s in range(max_steps + 1)]


def test_paper_shares_of_different_lengths_get_the_specs_schedule(tmp_path):
    runs = compiled_train_configs("specs/bad_data_good_models.yaml", tmp_path)
    by_steps = {cfg.max_steps: (cfg, loaded) for cfg, loaded in runs}
    (short_cfg, short), (long_cfg, long) = by_steps[min(by_steps)], by_steps[max(by_steps)]
    assert long_cfg.max_steps > short_cfg.max_steps  # two shares with different token counts
    for cfg, loaded in ((short_cfg, short), (long_cfg, long)):
        spec, n = cfg.train, cfg.max_steps
        assert spec.warmup_fraction is not None and spec.warmup_tokens is None
        assert abs(loaded.scheduler.t_warmup - spec.warmup_fraction * n) <= 0.5  # the same share of each run
        assert loaded.scheduler.t_max == round(spec.decay_fraction * n)
        assert loaded.scheduler.alpha_f == spec.final_lr_ratio
        assert loaded.optimizer.eps == spec.eps and loaded.optimizer.learning_rate == spec.learning_rate
        lrs = lr_curve(loaded, n)
        peak = spec.learning_rate
        assert max(lrs) == pytest.approx(peak) and lrs.index(max(lrs)) == loaded.scheduler.t_warmup
        assert lrs[n] == pytest.approx(spec.final_lr_ratio * peak)  # fully decayed at the run's end
    assert short.scheduler.t_warmup < long.scheduler.t_warmup  # fractions, not a copied step count


def test_demo_schedule_equals_the_one_its_results_were_made_with(tmp_path):
    """Before: `warmup_steps: 20`, `t_max` = the run's steps, AdamW eps 1e-8 (the old default). The demo now
    states `warmup_tokens` and `eps`; its learning rate at every step must be the old one, bit for bit."""
    from olmo.config import SchedulerConfig
    from olmo.optim import build_scheduler

    runs = compiled_train_configs("specs/demo.yaml", tmp_path)
    assert len({cfg.max_steps for cfg, _ in runs}) > 1  # shares of different lengths
    for cfg, loaded in runs:
        n = cfg.max_steps
        old = build_scheduler(replace(loaded, scheduler=SchedulerConfig(
            name=loaded.scheduler.name, units="steps", t_warmup=20, t_max=n, alpha_f=0.1)))
        assert lr_curve(loaded, n) == [old.get_lr(loaded.optimizer.learning_rate, s, n) for s in range(n + 1)]
        assert loaded.optimizer.eps == 1e-8


@pytest.mark.parametrize("given, warmup, message", [
    ({}, ("fraction", 0.01), None),
    ({"warmup_tokens": 4096}, ("tokens", 4096), None),
    ({"warmup_fraction": 0.05}, ("fraction", 0.05), None),
    ({"warmup_tokens": 4096, "warmup_fraction": 0.05}, None, "exactly one"),
    ({"warmup_tokens": None, "warmup_fraction": None}, None, "exactly one"),
])
def test_warmup_is_one_of_a_fraction_and_a_token_count(given, warmup, message):
    from pydantic import ValidationError

    from compiler.schema.pretrain import PretrainSection

    if message:
        with pytest.raises(ValidationError, match=message):
            PretrainSection(**given)
        return
    section = PretrainSection(sequence_length=64, global_batch_size=8, **given)
    kind, value = warmup
    assert getattr(section, f"warmup_{kind}") == value
    assert getattr(section, f"warmup_{'tokens' if kind == 'fraction' else 'fraction'}") is None
    expected = round(value * 1000) if kind == "fraction" else round(value / (64 * 8))
    assert section.warmup_steps(1000) == expected


def test_decay_fraction_sets_where_the_decay_ends():
    from compiler.schema.pretrain import PretrainSection

    assert PretrainSection().decay_steps(5000) == 5000
    assert PretrainSection(decay_fraction=0.8).decay_steps(5000) == 4000
