"""Text models whose ONNX graph takes token ids (transformers): the tokenizer that travels in the
graph's metadata (a Hugging Face tokenizer.json of the BERT WordPiece kind) turns the request's
texts into the graph's inputs, and a batch runs as groups of texts of about the same length,
since a CPU pays for padding in full.

The tokenizer is implemented here, in Python, rather than with the `tokenizers` library: that
library and what pip installs with it weigh 37 MB, where the runtime image has 2 MB left under its
size target, and tokenizing costs well under 1% of a transformer's time per text. The tests hold
it to the library's output (tests/examples/test_sentiment_minilm.py).
"""

from __future__ import annotations

import json
import re
import string
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlmodel_runtime.model import ModelLoadError

# The metadata key (onnx.helper.set_model_props) whose value is a tokenizer.json document.
TOKENIZER_METADATA = "tokenizer"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Most padding a group of texts may carry, as a share of its real tokens. A batch of one-sentence
# reviews padded to its longest text ran at half the rate of the same texts one by one (measured,
# examples/sentiment-minilm).
MAX_PADDING = 0.1

RunFn = Callable[[list[str], dict[str, np.ndarray]], list[Any]]

# ASCII text (most requests) takes a fast path: controls dropped, \t \n \r made spaces, and words
# are runs of letters and digits, every other printable character being punctuation.
_ASCII_CLEAN = {code: None for code in [*range(32), 127] if chr(code) not in "\t\n\r"} | {
    ord("\t"): " ", ord("\n"): " ", ord("\r"): " "
}
_ASCII_WORDS = re.compile(r"[a-zA-Z0-9]+|[^\sa-zA-Z0-9]")
_ASCII_PUNCTUATION = frozenset(string.punctuation)
# CJK ideographs, which BERT splits into one word each.
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))  # fmt: skip


def _is_cjk(code: int) -> bool:
    return any(low <= code <= high for low, high in _CJK)


@dataclass(frozen=True)
class WordPiece:
    """BERT's tokenizer as tokenizer.json describes it: BertNormalizer, BertPreTokenizer, WordPiece,
    [CLS] text [SEP], truncation on the right."""

    vocab: dict[str, int]
    unk_id: int
    cls_id: int
    sep_id: int
    pad_id: int
    max_length: int
    lowercase: bool
    strip_accents: bool
    chinese_chars: bool
    clean_text: bool
    prefix: str = "##"
    max_word_chars: int = 100

    @classmethod
    def from_json(cls, document: str) -> WordPiece:
        """Read tokenizer.json; raise ValueError for any other kind of tokenizer."""
        spec = json.loads(document)
        model, normalizer = spec.get("model") or {}, spec.get("normalizer") or {}
        pre_tokenizer, post = spec.get("pre_tokenizer") or {}, spec.get("post_processor") or {}
        truncation, padding = spec.get("truncation") or {}, spec.get("padding") or {}
        kinds = (model.get("type"), normalizer.get("type"), pre_tokenizer.get("type"))
        if kinds != ("WordPiece", "BertNormalizer", "BertPreTokenizer"):
            raise ValueError(
                f"model, normalizer and pre-tokenizer are {kinds}; this runtime tokenizes "
                "BERT-style text (WordPiece, BertNormalizer, BertPreTokenizer)"
            )
        if post.get("type") == "TemplateProcessing":
            single = [next(iter(piece.values()))["id"] for piece in post["single"]]
            if single != ["[CLS]", "A", "[SEP]"]:
                raise ValueError(f"the post-processor makes {single}, not [CLS] A [SEP]")
        elif post.get("type") != "BertProcessing":
            raise ValueError(f"post-processor {post.get('type')!r} is not BERT's")
        if not truncation.get("max_length") or truncation.get("direction", "Right") != "Right":
            raise ValueError("truncation must be set, on the right, with max_length")
        if padding and padding.get("direction", "Right") != "Right":
            raise ValueError("padding must be on the right")
        vocab = model["vocab"]
        lowercase = bool(normalizer.get("lowercase", True))
        strip_accents = normalizer.get("strip_accents")
        return cls(
            vocab=vocab,
            unk_id=vocab[model.get("unk_token", "[UNK]")],
            cls_id=vocab["[CLS]"],
            sep_id=vocab["[SEP]"],
            pad_id=int(padding["pad_id"]) if padding else vocab.get("[PAD]", 0),
            max_length=int(truncation["max_length"]),
            lowercase=lowercase,
            strip_accents=lowercase if strip_accents is None else bool(strip_accents),
            chinese_chars=bool(normalizer.get("handle_chinese_chars", True)),
            clean_text=bool(normalizer.get("clean_text", True)),
            prefix=model.get("continuing_subword_prefix", "##"),
            max_word_chars=int(model.get("max_input_chars_per_word", 100)),
        )

    def encode(self, text: str) -> list[int]:
        """[CLS] + the text's word pieces, at most max_length - 2 of them + [SEP]."""
        budget = self.max_length - 2
        ids = [self.cls_id]
        for word in self._words(text):
            ids.extend(self._pieces(word))
            if len(ids) > budget:
                del ids[budget + 1 :]
                break
        ids.append(self.sep_id)
        return ids

    def _words(self, text: str) -> list[str]:
        if text.isascii() and self.clean_text:
            text = text.translate(_ASCII_CLEAN)
            return _ASCII_WORDS.findall(text.lower() if self.lowercase else text)
        words: list[str] = []
        for chunk in self._normalize(text).split():
            start = 0
            for position, char in enumerate(chunk):
                if char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P"):
                    if position > start:
                        words.append(chunk[start:position])
                    words.append(char)
                    start = position + 1
            if start < len(chunk):
                words.append(chunk[start:])
        return words

    def _normalize(self, text: str) -> str:
        kept = []
        for char in text:
            code = ord(char)
            category = unicodedata.category(char)
            if self.clean_text:
                if code == 0 or code == 0xFFFD or (category[0] == "C" and char not in "\t\n\r"):
                    continue
                if char in "\t\n\r" or category in ("Zs", "Zl", "Zp"):
                    char = " "
            if self.chinese_chars and _is_cjk(code):
                char = f" {char} "
            kept.append(char)
        text = "".join(kept)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if self.lowercase:
            # Character by character, as the Rust library does (str.lower() would make a final Σ ς).
            text = "".join(map(str.lower, text))
        return text

    def _pieces(self, word: str) -> list[int]:
        if len(word) > self.max_word_chars:
            return [self.unk_id]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                found = self.vocab.get(piece)
                if found is not None:
                    pieces.append(found)
                    break
                end -= 1
            else:
                return [self.unk_id]  # no piece matches: the whole word is unknown
            start = end
        return pieces


class TokenFeeds:
    """Texts in, the graph's int64 [N, L] token inputs out."""

    def __init__(self, tokenizer: WordPiece, input_names: tuple[str, ...]) -> None:
        self._tokenizer = tokenizer
        self._input_names = input_names

    @classmethod
    def from_session(cls, session: Any) -> TokenFeeds | None:
        """The tokenizer of a graph that carries one, None for any other graph."""
        document = session.get_modelmeta().custom_metadata_map.get(TOKENIZER_METADATA)
        if document is None:
            return None
        names = tuple(item.name for item in session.get_inputs())
        if "input_ids" not in names or not set(names) <= set(TOKEN_INPUTS):
            raise ModelLoadError(
                "UnsupportedInputs",
                f"the ONNX graph carries a tokenizer but takes {list(names)}: a graph with a "
                "tokenizer must take input_ids and optionally attention_mask and token_type_ids",
            )
        try:
            tokenizer = WordPiece.from_json(document)
        except (ValueError, KeyError, TypeError, StopIteration) as exc:
            raise ModelLoadError(
                "UnsupportedTokenizer",
                f'the "{TOKENIZER_METADATA}" metadata of the ONNX graph is not a tokenizer this '
                f"runtime applies: {exc}",
            ) from exc
        return cls(tokenizer, names)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The graph's inputs for `texts`, padded to the longest."""
        return self._encode(texts)[0]

    def run(self, run: RunFn, wanted: list[str], texts: list[str]) -> list[np.ndarray]:
        """`run(wanted, feeds)` over groups of similar length; outputs in the order of `texts`."""
        feeds, lengths = self._encode(texts)
        outputs: list[np.ndarray] = []
        for group in groups_by_length(lengths):
            # Padding is on the right: the group's columns past its longest text are all padding.
            width = int(lengths[group].max())
            part = run(wanted, {name: values[group, :width] for name, values in feeds.items()})
            if not outputs:
                outputs = [np.empty((len(texts), *np.shape(v)[1:]), np.asarray(v).dtype) for v in part]
            for output, values in zip(outputs, part, strict=True):
                output[group] = values
        return outputs

    def _encode(self, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        encoded = [self._tokenizer.encode(text) for text in texts]
        lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)
        ids = np.full((len(texts), int(lengths.max(initial=0))), self._tokenizer.pad_id, dtype=np.int64)
        for row, values in enumerate(encoded):
            ids[row, : len(values)] = values
        mask = (np.arange(ids.shape[1]) < lengths[:, None]).astype(np.int64)
        columns = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {name: columns[name] for name in self._input_names}, lengths


def groups_by_length(lengths: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Indices of the texts, shortest first, cut into groups that padded to their longest text
    carry at most MAX_PADDING extra tokens (texts of one length always share a group)."""
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start, real = 0, 0
    for position, index in enumerate(order):
        length = int(lengths[index])
        padded = (position - start + 1) * length
        if position > start and padded > (1 + MAX_PADDING) * (real + length):
            groups.append(order[start:position])
            start, real = position, 0
        real += length
    groups.append(order[start:])
    return groups
