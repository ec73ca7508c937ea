#!/usr/bin/env python3
"""Build a tiny Llama model and its tokenizer locally, for the real-vLLM tests (no hub).

Run with the Python of vLLM's environment (it has torch, transformers and tokenizers):

    $VLLM_ENV/bin/python scripts/build_tiny_model.py OUTPUT_DIR [--seed 0]

The model has 2 layers, hidden size 256, 4 attention heads and 2 KV heads, random weights
in bf16 (about 3.3 M parameters); the tokenizer is a 4,096-token byte-level BPE trained on
text made up here, with a chat template. vLLM answers it deterministically at temperature
0. OUTPUT_DIR/.complete is written last, so a half-built directory is never taken for a
model; a complete one is kept as it is.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path
from typing import Any

VOCAB = 4096
SPECIAL = ["<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CONSONANTS = "bcdfghjklmnprstvwz"
VOWELS = "aeiou"


def corpus(seed: int, lines: int = 20_000) -> list[str]:
    """Made-up text with enough distinct words for 4,096 merges (nothing is fetched)."""
    rng = random.Random(seed)  # noqa: S311 (test data, not a secret)
    syllables = [c + v for c in CONSONANTS for v in VOWELS]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(6000)]
    return [" ".join(rng.choices(words, k=rng.randint(4, 16))) for _ in range(lines)]


def build_tokenizer(seed: int, out: Path) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus(seed), trainer=trainer)
    bos, eos, unk = SPECIAL[:3]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, unk_token=unk
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_model(seed: int, out: Path, vocab_size: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=0,
        eos_token_id=1,
        torch_dtype="bfloat16",
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out: Path = args.output
    if (out / ".complete").exists():
        print(out)
        return 0
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tokenizer = build_tokenizer(args.seed, out)
    build_model(args.seed, out, len(tokenizer))
    (out / ".complete").write_text("built by scripts/build_tiny_model.py\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
