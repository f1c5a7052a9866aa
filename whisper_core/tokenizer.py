"""Whisper's byte-level BPE as a tiktoken Encoding, built from a checkpoint's tokenizer.json."""

from __future__ import annotations

import functools
import gzip
import json
import string
from dataclasses import dataclass, field
from pathlib import Path

import tiktoken

from .audio import TIMESTAMP_STEP

# Language codes and English names. The order of the language tokens comes from each checkpoint.
LANGUAGES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian",
    "kn": "kannada", "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque",
    "is": "icelandic", "hy": "armenian", "ne": "nepali", "mn": "mongolian", "bs": "bosnian",
    "kk": "kazakh", "sq": "albanian", "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi",
    "si": "sinhala", "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans",
    "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati",
    "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek", "fo": "faroese", "ht": "haitian creole",
    "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese", "sa": "sanskrit",
    "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog", "mg": "malagasy",
    "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa", "ba": "bashkir",
    "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}
# Names people type, mapped to codes (also the usual aliases).
TO_LANGUAGE_CODE = {
    **{name: code for code, name in LANGUAGES.items()},
    "burmese": "my", "valencian": "ca", "flemish": "nl", "haitian": "ht", "letzeburgesch": "lb",
    "pushto": "ps", "panjabi": "pa", "moldavian": "ro", "moldovan": "ro", "sinhalese": "si",
    "castilian": "es", "mandarin": "zh",
}

# GPT-2's split of text into pre-tokens, which Whisper's vocabulary was trained with.
_PRETOKENIZE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>


def normalize_language(language: str | None) -> str | None:
    """'French', 'fr' and 'FR' all -> 'fr'; None stays None (detect). Unknown names raise ValueError."""
    if language is None:
        return None
    key = language.strip().lower()
    if key in LANGUAGES:
        return key
    if key in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[key]
    raise ValueError(f"Unknown language {language!r}; use a code such as 'fr' or a name such as 'French'")


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes-to-printable-characters table used by tokenizer.json's vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


@dataclass(frozen=True)
class Tokenizer:
    """Whisper's tokens: text BPE, then the special tokens in Whisper's order, then the timestamps."""

    encoding: tiktoken.Encoding
    languages: tuple[str, ...]  # language codes in token order
    language: str | None = None
    task: str | None = None
    special: dict[str, int] = field(default_factory=dict)

    def with_task(self, language: str | None, task: str | None) -> Tokenizer:
        return Tokenizer(self.encoding, self.languages, language, task, self.special)

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, disallowed_special=())

    def decode(self, tokens: list[int]) -> str:
        """Text tokens only: timestamps and other special tokens are dropped."""
        return self.encoding.decode([t for t in tokens if t < self.eot])

    def decode_with_timestamps(self, tokens: list[int]) -> str:
        """Text with timestamp tokens written as <|1.08|>."""
        return self.encoding.decode(tokens)

    @property
    def eot(self) -> int:
        return self.special["<|endoftext|>"]

    @property
    def sot(self) -> int:
        return self.special["<|startoftranscript|>"]

    @property
    def transcribe(self) -> int:
        return self.special["<|transcribe|>"]

    @property
    def translate(self) -> int:
        return self.special["<|translate|>"]

    @property
    def sot_lm(self) -> int:
        return self.special["<|startoflm|>"]

    @property
    def sot_prev(self) -> int:
        return self.special["<|startofprev|>"]

    @property
    def no_speech(self) -> int:
        return self.special["<|nospeech|>"]

    @property
    def no_timestamps(self) -> int:
        return self.special["<|notimestamps|>"]

    @property
    def timestamp_begin(self) -> int:
        return self.special["<|0.00|>"]

    @property
    def is_multilingual(self) -> bool:
        return len(self.languages) > 1

    @property
    def language_tokens(self) -> list[int]:
        return [self.special[f"<|{code}|>"] for code in self.languages]

    def language_token(self, code: str) -> int:
        token = self.special.get(f"<|{code}|>")
        if token is None:
            raise ValueError(f"This model does not know the language {code!r}")
        return token

    @property
    def sot_sequence(self) -> tuple[int, ...]:
        """<|startoftranscript|>, then (multilingual models) the language and the task."""
        seq = [self.sot]
        if self.is_multilingual:
            if self.language is not None:
                seq.append(self.language_token(self.language))
            if self.task is not None:
                seq.append(self.translate if self.task == "translate" else self.transcribe)
        return tuple(seq)

    @property
    def sot_sequence_including_notimestamps(self) -> tuple[int, ...]:
        return (*self.sot_sequence, self.no_timestamps)

    @functools.cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens of symbols that are not speech (speaker tags, music notes, brackets): suppressed
        so that the model writes words, not sound descriptions. A token is kept out only where the
        symbol starts it, alone or after a space."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        # Symbols that may be part of a word but not the start of one: only the spaced form is kept out.
        music = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + list(music):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in music:
                    result.add(tokens[0])
        return tuple(sorted(result))

    def split_to_word_tokens(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Group tokens into words: on spaces and punctuation, or per character for languages
        written without spaces."""
        if self.language in {"zh", "ja", "th", "lo", "my", "yue"}:
            return self._split_on_unicode(tokens)
        words, word_tokens = self._split_on_unicode(tokens)
        out_words: list[str] = []
        out_tokens: list[list[int]] = []
        for subword, subword_tokens in zip(words, word_tokens, strict=True):
            starts_word = subword_tokens[0] >= self.eot or subword.startswith(" ")
            punctuation = subword.strip() in string.punctuation
            if starts_word or punctuation or not out_words:
                out_words.append(subword)
                out_tokens.append(list(subword_tokens))
            else:
                out_words[-1] += subword
                out_tokens[-1].extend(subword_tokens)
        return out_words, out_tokens

    def _split_on_unicode(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Cut wherever the tokens so far decode to whole characters."""
        replacement = "\ufffd"
        full = self.decode_with_timestamps(tokens)
        words: list[str] = []
        word_tokens: list[list[int]] = []
        current: list[int] = []
        offset = 0
        for token in tokens:
            current.append(token)
            decoded = self.decode_with_timestamps(current)
            if replacement not in decoded or full[offset + decoded.index(replacement)] == replacement:
                words.append(decoded)
                word_tokens.append(current)
                current = []
                offset += len(decoded)
        return words, word_tokens


# Whisper's vocabulary sizes: text tokens (GPT-2's for English-only models, one more for multilingual
# ones), then end-of-text, start-of-transcript, the languages, six task/control tokens and the timestamps.
N_TEXT_ENGLISH = 50256
N_TEXT_MULTILINGUAL = 50257
MULTILINGUAL_N_VOCAB = 51865  # the smallest multilingual vocabulary (99 languages)
_N_FIXED_SPECIALS = 2 + 6 + N_TIMESTAMPS
# Language codes some tokenizer.json files spell the old way.
_CODE_ALIASES = {"iw": "he"}
GPT2_MERGES = Path(__file__).parent / "assets" / "gpt2_merges.txt.gz"


def build_tokenizer(tokenizer_json: Path, n_vocab: int | None = None) -> Tokenizer:
    """A Tokenizer from a Hugging Face tokenizer.json (the vocabulary every Whisper checkpoint ships).
    Whisper's specials are laid out after its text tokens; `n_vocab` (the model's) fixes how many
    languages there are, else the file's added tokens say."""
    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    decoder = _byte_decoder()
    ranks: dict[bytes, int] = {}
    for token, rank in spec["model"]["vocab"].items():
        if token in added:
            continue
        ranks[bytes(decoder[c] for c in token)] = rank
    codes = [_CODE_ALIASES.get(content[2:-2], content[2:-2])
             for content, _ in sorted(added.items(), key=lambda item: item[1]) if content.startswith("<|")]
    return _whisper_tokenizer(ranks, [code for code in codes if code in LANGUAGES], n_vocab)


def english_tokenizer(n_vocab: int | None = None) -> Tokenizer:
    """English-only models' tokenizer from GPT-2's BPE merges shipped in this package (OpenAI's GPT-2
    release, MIT): OpenAI's .pt files carry no vocabulary, and tiktoken would fetch GPT-2's from the
    network. A token's rank is its place: the 256 bytes in GPT-2's order, then one per merge."""
    decoder = _byte_decoder()
    ranks = {bytes([b]): rank for rank, b in enumerate(decoder.values())}
    lines = gzip.decompress(GPT2_MERGES.read_bytes()).decode("utf-8").splitlines()
    for line in lines[1:]:  # the first line is the format's version
        left, right = line.split(" ")
        ranks[bytes(decoder[c] for c in left + right)] = len(ranks)
    return _whisper_tokenizer(ranks, [], n_vocab)


def _whisper_tokenizer(ranks: dict[bytes, int], file_languages: list[str], n_vocab: int | None) -> Tokenizer:
    """Lay out Whisper's special tokens after the text tokens. English-only models have the language
    tokens too (their ids must line up) but speak English only."""
    n_text = max(ranks.values()) + 1
    multilingual = n_vocab >= MULTILINGUAL_N_VOCAB if n_vocab is not None else n_text == N_TEXT_MULTILINGUAL
    if n_text != (N_TEXT_MULTILINGUAL if multilingual else N_TEXT_ENGLISH):
        kind = "multilingual" if multilingual else "English-only"
        raise ValueError(f"the vocabulary has {n_text} text tokens, which does not fit a {kind} Whisper model")
    n_languages = len(file_languages) if n_vocab is None else n_vocab - n_text - _N_FIXED_SPECIALS
    # The file's order first; models with more languages than the file names (large-v3's yue) take
    # Whisper's order for the rest.
    languages = list(dict.fromkeys(file_languages))[:n_languages]
    languages += [code for code in LANGUAGES if code not in languages][: n_languages - len(languages)]
    names = ["<|endoftext|>", "<|startoftranscript|>"]
    names += [f"<|{code}|>" for code in languages]
    names += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
              "<|notimestamps|>"]
    names += [f"<|{i * TIMESTAMP_STEP:.2f}|>" for i in range(N_TIMESTAMPS)]
    special = {name: n_text + i for i, name in enumerate(names)}
    encoding = tiktoken.Encoding(
        name=f"whisper-{n_text}-{len(languages)}",
        pat_str=_PRETOKENIZE,
        mergeable_ranks=ranks,
        special_tokens=special,
    )
    return Tokenizer(encoding, tuple(languages) if multilingual else ("en",), special=special)
