"""Deterministic "generation": every token is a hash of the request and of live weight bytes.

Token i of a request is hash(model seed, prompt, request nonce, i, a few weight bytes at
positions chosen by (seed, prompt, i)). Same weights + temperature 0 (or a request seed) give the
same words; zero-filled weights after a level-2 wake without reload give different ones.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SAMPLES_PER_TOKEN = 4
EMBEDDING_DIM = 64

_WORDS = """
    the a an and or but of to in on at by for with from about into over under after before
    model engine token weight cache memory sleep wake swap load serve request answer question
    river mountain forest ocean cloud stone garden window door bridge road city village house
    red blue green yellow quiet bright gentle rapid ancient modern simple careful curious brave
    run walk write read think build carry hold open close start stop wait move turn keep find
    day night morning evening winter summer spring autumn year moment hour minute second week
    cat dog bird fish horse fox owl bee wolf bear deer rabbit lion tiger whale dolphin crow
    apple bread cheese honey salt pepper tea coffee water milk rice lemon olive grape plum
    one two three four five six seven eight nine ten many few some every each other same new
    light sound color shape number letter story song poem map clock key book paper pen lamp
"""
VOCAB = tuple(_WORDS.split())


def _digest(*parts: bytes) -> bytes:
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        hasher.update(struct.pack("<I", len(part)))
        hasher.update(part)
    return hasher.digest()


def request_key(
    *, seed: int, prompt: str, temperature: float, request_seed: int | None, sample: int = 0
) -> bytes:
    """What a request's output depends on besides the weights; random unless deterministic.

    `sample` numbers the sequences of one prompt (`n` > 1): each is its own draw.
    """
    if temperature == 0:
        nonce = b"greedy"
    elif request_seed is not None:
        nonce = b"seed:%d" % request_seed
    else:
        nonce = os.urandom(16)
    if sample:
        nonce += b"#%d" % sample
    return _digest(b"%d" % seed, prompt.encode(), nonce)


def sample_offsets(key: bytes, positions: Iterable[int]) -> list[int]:
    """Weight offsets (unbounded; the backend wraps them) read for each position, in order."""
    offsets: list[int] = []
    for position in positions:
        digest = _digest(key, b"offsets", b"%d" % position)
        offsets.extend(struct.unpack("<4I", digest)[:SAMPLES_PER_TOKEN])
    return offsets


def tokens(key: bytes, samples: bytes, count: int) -> list[str]:
    """`count` words for a request whose weight samples (SAMPLES_PER_TOKEN each) are `samples`."""
    words = []
    for position in range(count):
        chunk = samples[position * SAMPLES_PER_TOKEN : (position + 1) * SAMPLES_PER_TOKEN]
        digest = _digest(key, b"token", b"%d" % position, chunk)
        words.append(VOCAB[int.from_bytes(digest[:4], "little") % len(VOCAB)])
    return words


def embedding(key: bytes, samples: bytes, dim: int = EMBEDDING_DIM) -> list[float]:
    """A unit vector derived from the request key and weight samples."""
    raw: list[float] = []
    counter = 0
    while len(raw) < dim:
        digest = _digest(key, b"embed", b"%d" % counter, samples)
        raw.extend((value / 0xFFFF) * 2 - 1 for value in struct.unpack("<8H", digest))
        counter += 1
    vector = raw[:dim]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def count_tokens(text: str) -> int:
    """Whitespace tokens: close enough to a tokenizer for usage accounting."""
    return len(text.split())


# Token ids (/tokenize, /detokenize, prompts given as ids): one per whitespace token, so
# they agree with count_tokens. A word of VOCAB is its index; any other word is its UTF-8
# bytes read as a number above them, so every id decodes back to its word without a table
# (the ids are large: the simulated model has no vocabulary size).
_VOCAB_IDS = {word: index for index, word in enumerate(VOCAB)}
FIRST_BYTES_ID = len(VOCAB)


def token_ids(text: str) -> list[int]:
    """The ids of `text`'s tokens."""
    return [_word_id(word) for word in text.split()]


def _word_id(word: str) -> int:
    known = _VOCAB_IDS.get(word)
    if known is not None:
        return known
    return FIRST_BYTES_ID + int.from_bytes(word.encode(errors="surrogatepass"), "big")


def token_strs(ids: Sequence[int]) -> list[str]:
    """The text of each token id ("" for an id that is no token)."""
    return [_word(token) for token in ids]


def detokenize(ids: Sequence[int]) -> str:
    """The text of token ids, words joined by single spaces (what tokens keep of a text)."""
    return " ".join(word for word in token_strs(ids) if word)


def _word(token: int) -> str:
    if 0 <= token < FIRST_BYTES_ID:
        return VOCAB[token]
    raw = token - FIRST_BYTES_ID
    if raw <= 0:
        return ""
    return raw.to_bytes((raw.bit_length() + 7) // 8, "big").decode(errors="replace")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def chat_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """Flatten chat messages into the prompt text the tokens are derived from."""
    return "\n".join(
        f"{message.get('role', 'user')}: {_content_text(message.get('content'))}"
        for message in messages
    )


def chat_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Usage prompt tokens of a chat: the whitespace tokens of every message's content."""
    return sum(count_tokens(_content_text(message.get("content"))) for message in messages)


def chat_token_ids(messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """The token ids of a chat, as many as its usage counts (no template tokens)."""
    return token_ids(" ".join(_content_text(message.get("content")) for message in messages))


def join_tokens(words: Sequence[str], first_index: int = 0) -> str:
    """The text of `words` as streamed: a space before every word except the very first."""
    return "".join(word if first_index + i == 0 else " " + word for i, word in enumerate(words))
