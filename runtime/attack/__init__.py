"""`attack` stage: red-teaming one model with plain red-team prompts and GCG adversarial suffixes.

Reads: `model` (HF checkpoint folder) and the red-team prompts of `attack.prompts`, through the source's
reader (`runtime.sources`), each with its own GCG target when `attack.target_field` names one (AdvBench's
`target`; else `gcg.target`). Writes `attacks.jsonl`: one row per attack: `attack` (`prompt` or `gcg`),
`prompt_index`, `prompt`, `input` (the text the model saw), `continuation`, `refused` (a refusal string
occurs in it); GCG rows add `target` (the one optimised toward), `suffix`, `suffix_ids`, `loss`,
`target_matched`, `steps_run`, `stopped_on_success`, `current_losses`, `best_losses`. Its id changes
with the `attack` section (less batch sizes and variants) and the seed — never with a scorer: the
`score` stage (`runtime.score`, source `attack`) scores the continuations and applies the judge
(toxicity, refusal or both), so a new scorer rescores without attacking again.

Both attacks decode greedily (`max_new_tokens`). The GCG attack (runtime.attack.gcg, the llm-attacks step rule)
runs on the first `gcg.max_prompts` prompts, each with its own seed derived from (`gcg.seed`, prompt
index), and stops early on a scorer-free check of the best suffix (at init and every
`gcg.success_check_every` steps if it improved since), chosen by the judge:
- `toxicity`: the greedy continuation reproduces the target exactly (gcg's own check, free);
- `refusal`: the greedy continuation of prompt + suffix holds no refusal string (llm-attacks' demo check);
- `both`: both of the above (the target stands in for the toxicity half, which needs a scorer).
The row reports the best suffix seen and its greedy continuation; `current_losses` / `best_losses` hold
the loss of the current suffix and the best loss so far, at init and after every step (for plotting).
Metrics are scorer-free: counts, refusal rates, GCG losses, steps and target matches, and the reader's
counts of the prompts source, `source_attack_<count>`.

Resuming (`GCGProgress`, in `ctx.work`): each finished GCG prompt's row is appended to `gcg_rows.jsonl`
(flushed and fsync'd), so a rerun skips the prompts already done; a torn last line (a kill mid-write) is
reported and dropped. On SIGTERM / SIGUSR1 (`runtime.preempt`) the current GCG step ends, the search's
state (`runtime.attack.gcg.GCGState`, a few KB) goes to `gcg_state.json` and the stage raises `Preempted`; the
rerun resumes that prompt mid-way, bit-identically. The prompt attack (one batched greedy pass) is redone.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from compiler.errors import StageError
from compiler.schema.attack import AttackSection
from compiler.stages.attack import Config
from runtime.preempt import StopSignals, resumed
from runtime.stage import StageContext

if TYPE_CHECKING:
    from runtime.attack.gcg import GCGState
    from runtime.sources import SourceCounts


def refused(text: str, refusal_strings: Sequence[str]) -> bool:
    """Does the continuation contain a refusal marker (case-sensitive substring)?"""
    return any(s in text for s in refusal_strings)


@dataclass(frozen=True)
class RedTeamPrompt:
    """A red-team prompt and the target GCG optimises toward for it (its record's own, else `gcg.target`;
    None when it has neither, and only prompts GCG does not attack may lack one)."""

    text: str
    target: str | None


def load_prompts(attack: AttackSection, ctx: StageContext, counts: SourceCounts | None = None) -> list[RedTeamPrompt]:
    """As many prompts as the larger of the two attacks needs (all of them when either has no cap), through
    the source's reader (dotted fields, cleaning, filters, sampling; empty prompts skipped and counted)."""
    from runtime.sources import describe, field_value, iter_records

    source, gcg_on = attack.prompts, _gcg_on(attack)
    text_field = getattr(source, "text_field", "text")  # a memmap has none: iter_records rejects it
    caps = [attack.max_prompts] + ([attack.gcg.max_prompts] if gcg_on else [])
    limit = None if None in caps else max(caps)
    gcg_limit = attack.gcg.max_prompts if gcg_on else 0
    prompts = []
    for i, record in enumerate(islice(iter_records(source, ctx.root, counts, text_fields=(text_field,)), limit)):
        where = f"{describe(source)}: record {i} (after its filters and sample)"
        target = _own_target(record, attack.target_field, source, where) or (attack.gcg.target if gcg_on else None)
        if target is None and gcg_on and (gcg_limit is None or i < gcg_limit):
            raise StageError(f"{where} has no GCG target in field {attack.target_field!r}, and attack.gcg.target "
                             "is null: give every attacked prompt a target, or set gcg.target as the fallback")
        prompts.append(RedTeamPrompt(field_value(record, text_field), target))
    if not prompts:
        raise StageError(f"attack.prompts holds no prompts ({describe(source)})")
    return prompts


def _own_target(record: dict[str, Any], field: str | None, source: Any, where: str) -> str | None:
    """The record's own target, cleaned as its text; None when the spec names no field or the record's is
    absent, null or empty."""
    from runtime.sources import clean_text, field_value

    if field is None:
        return None
    try:
        value = field_value(record, field)
    except KeyError:
        return None
    if value is not None and not isinstance(value, str):
        raise StageError(f"{where}: target field {field!r} is {type(value).__name__}, not text")
    return (clean_text(value, source) or None) if value else None


def _gcg_on(attack: AttackSection) -> bool:
    return attack.gcg is not None and attack.gcg.enabled


def greedy_continuations(model, tok, texts: Sequence[str], attack: AttackSection, desc: str) -> list[str]:
    """One greedy continuation per text (evaluate's batched generator with a one-token nucleus)."""
    from runtime.generate import Sampling, sample_continuations

    greedy = Sampling(samples_per_prompt=1, max_new_tokens=attack.max_new_tokens, temperature=1.0,
                      top_p=0.0, batch_size=attack.batch_size, seed=0)
    keys = [str(i) for i in range(len(texts))]
    return [c[0] for c in sample_continuations(model, tok, list(texts), keys, greedy, desc=desc)]


def attack_row(attack: AttackSection, prompt: str, text: str, continuation: str) -> dict[str, Any]:
    """One attack's row: what went in and what came out (scored and judged later, by `score`)."""
    return {"prompt": prompt, "input": text, "continuation": continuation,
            "refused": refused(continuation, attack.refusal_strings)}


def prompt_attack(cfg: Config, model, tok, prompts: Sequence[RedTeamPrompt]) -> list[dict[str, Any]]:
    """The red-team prompts as they are."""
    texts = [p.text for p in prompts]
    conts = greedy_continuations(model, tok, texts, cfg.attack, desc="prompt attack")
    return [{"attack": "prompt", "prompt_index": i, **attack_row(cfg.attack, p, p, c)}
            for i, (p, c) in enumerate(zip(texts, conts))]


class SuffixCheck:
    """GCG's early stop for one prompt (see the module docstring): memoised per suffix, so the reported
    suffix is generated once. `row(ids)` is the attack row of prompt + suffix."""

    def __init__(self, cfg: Config, model, tok, prompt: str, target: str) -> None:
        self.cfg, self.model, self.tok, self.prompt, self.target = cfg, model, tok, prompt, target
        self._rows: dict[tuple[int, ...], dict[str, Any]] = {}

    def row(self, suffix_ids: list[int]) -> dict[str, Any]:
        from runtime.attack.gcg import decode_suffix

        key = tuple(suffix_ids)
        if key not in self._rows:
            text = self.prompt + decode_suffix(self.tok, suffix_ids)
            (cont,) = greedy_continuations(self.model, self.tok, [text], self.cfg.attack, desc="gcg check")
            self._rows[key] = attack_row(self.cfg.attack, self.prompt, text, cont)
        return self._rows[key]

    def target_reproduced(self, suffix_ids: list[int]) -> bool:
        import torch

        from runtime.attack.gcg import target_losses

        device = next(self.model.parameters()).device
        ids = [self.tok(t, add_special_tokens=False)["input_ids"] for t in (self.prompt, self.target)]
        _, matched = target_losses(self.model, torch.tensor([ids[0]], device=device),
                                   torch.tensor([suffix_ids], device=device), torch.tensor([ids[1]], device=device))
        return bool(matched[0])

    def __call__(self, suffix_ids: list[int]) -> bool:
        if self.cfg.attack.judge == "both" and not self.target_reproduced(suffix_ids):
            return False
        return not self.row(suffix_ids)["refused"]


class GCGProgress:
    """The GCG prompts finished so far (`gcg_rows.jsonl`: one row per line, in prompt order) and the search
    state of the one a stop signal interrupted (`gcg_state.json`), in the stage's work folder."""

    def __init__(self, work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.rows_path, self.state_path = work / "gcg_rows.jsonl", work / "gcg_state.json"

    def finished(self, prompts: Sequence[RedTeamPrompt]) -> list[dict[str, Any]]:
        """The rows written so far, checked against `prompts`; a torn last line is reported and cut off."""
        if not self.rows_path.is_file():
            return []
        data = self.rows_path.read_bytes()
        *lines, torn = data.split(b"\n")  # each row is written with its newline: anything after the last is torn
        if torn:
            print(f"attack: ignoring the torn last line of {self.rows_path} ({len(torn)} bytes, cut by a kill)",
                  file=sys.stderr, flush=True)
            os.truncate(self.rows_path, len(data) - len(torn))
        rows = []
        for i, line in enumerate(lines):
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict) or row.get("prompt_index") != i or i >= len(prompts) \
                    or row.get("prompt") != prompts[i].text:
                raise StageError(f"{self.rows_path}:{i + 1} is not the GCG row of prompt {i} of this stage: "
                                 f"delete {self.rows_path} (and {self.state_path.name}) to attack afresh")
            rows.append(row)
        return rows

    def append(self, row: dict[str, Any]) -> None:
        """Add a finished prompt's row durably; the interrupted search it came from is done with."""
        with open(self.rows_path, "ab") as f:
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        self.state_path.unlink(missing_ok=True)

    def save_state(self, index: int, state: GCGState) -> None:
        """The search state of prompt `index`, written atomically (temp file, fsync, rename)."""
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"prompt_index": index, "state": state.to_json()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def state_for(self, index: int) -> GCGState | None:
        """The saved search state of prompt `index`, if the last stop interrupted that prompt."""
        from runtime.attack.gcg import GCGState

        if not self.state_path.is_file():
            return None
        try:
            saved = json.loads(self.state_path.read_text(encoding="utf-8"))
            state = GCGState.from_json(saved["state"]) if saved["prompt_index"] == index else None
        except (ValueError, KeyError, TypeError):
            raise StageError(f"{self.state_path} is unreadable: delete it to restart that GCG prompt "
                             "from its first step") from None
        if state is None:  # that prompt finished before the kill removed its state
            self.state_path.unlink()
        return state


def _save_on_stop(progress: GCGProgress, stop: StopSignals, index: int, total: int) -> Callable[[GCGState], None]:
    """GCG's `after_step`: on a stop signal, save the search state of prompt `index` and stop."""
    def after_step(state: GCGState) -> None:
        if stop.requested():
            progress.save_state(index, state)
            stop.stop(f"GCG prompt {index} at step {state.step} ({index} of {total} prompts done) "
                      f"in {progress.state_path.parent}")
    return after_step


def gcg_attack_rows(cfg: Config, model, tok, prompts: Sequence[RedTeamPrompt], work: Path,
                    stop: StopSignals) -> list[dict[str, Any]]:
    """A GCG suffix per prompt (early stop on the judge's scorer-free check), then its greedy continuation;
    prompts finished by an earlier run are read back, an interrupted one resumes mid-way (`GCGProgress`)."""
    from tqdm.auto import tqdm

    from runtime.attack.gcg import GCGSettings, allowed_token_mask, gcg_attack
    from runtime.generate import row_seed

    g = cfg.attack.gcg
    settings = GCGSettings(g.suffix_tokens, g.steps, g.candidates_per_step, g.top_k_tokens, g.eval_batch_size,
                           success_check_every=g.success_check_every)
    allowed = allowed_token_mask(tok, model.get_input_embeddings().weight.shape[0])
    progress = GCGProgress(work)
    rows = progress.finished(prompts)
    first, n = len(rows), len(prompts)
    state = progress.state_for(first)
    if rows or state is not None:
        resumed("attack", f"{first} of {n} GCG prompts" + (f", prompt {first} at step {state.step}" if state else ""))
    for i in tqdm(range(first, n), desc="gcg prompts", unit="prompt", initial=first, total=n):
        p = prompts[i]
        check = SuffixCheck(cfg, model, tok, p.text, p.target)
        r = gcg_attack(model, tok, p.text, p.target, settings, row_seed(g.seed, str(i), 0), allowed=allowed,
                       succeeded=None if cfg.attack.judge == "toxicity" else check, desc=f"gcg {i}",
                       resume=state if i == first else None, after_step=_save_on_stop(progress, stop, i, n))
        row = {"attack": "gcg", "prompt_index": i, **check.row(r.suffix_ids), "target": p.target,
               "suffix": r.suffix_text, "suffix_ids": r.suffix_ids, "loss": r.loss,
               "target_matched": r.target_matched, "steps_run": r.steps_run, "stopped_on_success": r.stopped_on_success,
               "current_losses": r.current_losses, "best_losses": r.best_losses}
        progress.append(row)
        rows.append(row)
        if stop.requested() and i + 1 < n:
            stop.stop(f"{i + 1} of {n} GCG prompts in {progress.rows_path}")
    return rows


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def summarize(prompt_rows: Sequence[dict], gcg_rows: Sequence[dict]) -> dict[str, float]:
    """The stage's scorer-free metrics (success rates and toxicity come from the `score` stage)."""
    m: dict[str, float] = {
        "n_prompts": float(len(prompt_rows)),
        "prompt_refusal_rate": _mean([r["refused"] for r in prompt_rows]),
        "n_gcg_prompts": float(len(gcg_rows)),
    }
    if gcg_rows:
        m |= {
            "gcg_refusal_rate": _mean([r["refused"] for r in gcg_rows]),
            "gcg_target_loss_mean": _mean([r["loss"] for r in gcg_rows]),
            "gcg_target_loss_initial_mean": _mean([r["current_losses"][0] for r in gcg_rows]),
            "gcg_steps_mean": _mean([r["steps_run"] for r in gcg_rows]),
            "gcg_target_match_rate": _mean([r["target_matched"] for r in gcg_rows]),
            "gcg_early_stop_rate": _mean([r["stopped_on_success"] for r in gcg_rows]),
        }
    return m


def run(cfg: Config, ctx: StageContext) -> dict:
    with StopSignals("attack") as stop:
        return _attack(cfg, ctx, stop)


def _attack(cfg: Config, ctx: StageContext, stop: StopSignals) -> dict:
    import torch

    from runtime.device import place
    from runtime.generate import load_model
    from runtime.sources import SourceCounts

    torch.set_num_threads(max(1, ctx.threads))
    torch.manual_seed(cfg.seed)
    counts = SourceCounts()
    prompts = load_prompts(cfg.attack, ctx, counts)  # before the model: bad data fails at once
    placement = place(cfg.compute, "attack")
    model, tok = load_model(ctx.input("model") / "model", placement)  # GCG's gradients in the policy's format
    prompt_rows = prompt_attack(cfg, model, tok, prompts[:cfg.attack.max_prompts])
    gcg_rows = gcg_attack_rows(cfg, model, tok, prompts[:cfg.attack.gcg.max_prompts], ctx.work, stop) \
        if _gcg_on(cfg.attack) else []
    with open(ctx.out / "attacks.jsonl", "w", encoding="utf-8") as out:
        for row in prompt_rows + gcg_rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return summarize(prompt_rows, gcg_rows) | counts.metrics("attack") | {"computed_in": placement.compute.label}
