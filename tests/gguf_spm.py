"""Writes tests/fixtures/gguf/spm/: a SentencePiece (Llama/Mistral-style) vocabulary in GGUF and the
token ids llama.cpp gives for a set of texts, which rmas's GGUF tokenizer must reproduce
(`tests/gguf_archs.rs`).

* `spm.model`: a byte-fallback BPE SentencePiece model trained here on the corpus below with Llama's
  settings (identity normalization, a dummy prefix, extra whitespace kept, digits split), plus
  two user-defined chat tokens.
* `vocab.gguf`: that vocabulary as llama.cpp's converter writes it (`_create_vocab_sentencepiece`:
  tokens, scores, token types from the model's piece types; `tokenizer.ggml.model = llama`, special
  ids, `add_space_prefix`), with a Llama header and no tensors (llama.cpp reads it `vocab_only`).
* `expected.json`: for each text, llama.cpp's ids (`llama_cpp.Llama(vocab_only=True).tokenize`,
  special tokens parsed, no BOS) and SentencePiece's own ids (`encode`, on the text alone: it has
  no special tokens), which agree wherever the text holds no special token.

    python3 -m venv /tmp/v && /tmp/v/bin/pip install gguf==0.19.0 numpy sentencepiece==0.2.1 llama-cpp-python==0.3.16
    /tmp/v/bin/python tests/gguf_spm.py
"""

import io
import json
from pathlib import Path

import gguf
import sentencepiece as spm

OUT = Path(__file__).parent / "fixtures" / "gguf" / "spm"

CORPUS = """\
The quick brown fox jumps over the lazy dog. A llama is a domesticated South American camelid.
RecursiveMAS agents talk through latent states instead of text; the last agent decodes the answer.
Each agent rolls out a few latent steps, and links map the latents into the next agent's embeddings.
Quantized weights keep fewer bytes per token: eight bits, four bits, and the scales of each block.
In 1969, 2 astronauts walked on the Moon; 384,400 km away. What is 12 + 30? It is 42.
def add(a, b):
    return a + b
Les modèles de langue naïfs écrivent des réponses très générales. Über den Wolken.
Il était une fois un lama qui aimait les mathématiques et la poésie.
"""

CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space and  two   gaps",
    "trailing spaces   ",
    "line one\nline two\n\n\ttabbed",
    "digits 1234567890 and 3.14159",
    "naïve café, Über, 日本語 and 🦙",
    "",
    " ",
    "<s>after a control token</s> and more",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
    "a<|im_end|>b",
    "latent states, latents; recursion!",
]


def train() -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 4),
        model_writer=model,
        model_type="bpe",
        vocab_size=800,
        byte_fallback=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        user_defined_symbols=CHAT_TOKENS,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
    )
    return model.getvalue()


def write_gguf(sp: spm.SentencePieceProcessor, path: Path) -> None:
    """The converter's `_create_vocab_sentencepiece` and `LlamaModel` header, without tensors."""
    def kind(i: int) -> gguf.TokenType:
        if sp.is_unknown(i):
            return gguf.TokenType.UNKNOWN
        if sp.is_control(i):
            return gguf.TokenType.CONTROL
        if sp.is_unused(i):
            return gguf.TokenType.UNUSED
        if sp.is_byte(i):
            return gguf.TokenType.BYTE
        # The converter takes user-defined tokens from the model's added tokens.
        return gguf.TokenType.USER_DEFINED if sp.id_to_piece(i) in CHAT_TOKENS else gguf.TokenType.NORMAL

    n = sp.get_piece_size()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("spm-vocab")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(n)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([sp.id_to_piece(i).encode() for i in range(n)])
    w.add_token_scores([sp.get_score(i) for i in range(n)])
    w.add_token_types([kind(i) for i in range(n)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)  # `add_dummy_prefix` of the training above
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    import llama_cpp

    OUT.mkdir(parents=True, exist_ok=True)
    model = train()
    (OUT / "spm.model").write_bytes(model)
    sp = spm.SentencePieceProcessor(model_proto=model)
    write_gguf(sp, OUT / "vocab.gguf")
    llm = llama_cpp.Llama(str(OUT / "vocab.gguf"), vocab_only=True, verbose=False)
    cases = []
    for text in TEXTS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        own = sp.encode(text) if not any(t in text for t in CHAT_TOKENS + ["<s>", "</s>"]) else None
        if own is not None and own != ids:
            raise SystemExit(f"llama.cpp and SentencePiece disagree on {text!r}: {ids} vs {own}")
        cases.append({"text": text, "ids": ids, "sentencepiece_ids": own})
    doc = {"reference": f"llama-cpp-python {llama_cpp.__version__}, sentencepiece {spm.__version__}",
           "vocab_size": sp.get_piece_size(), "cases": cases}
    (OUT / "expected.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT}: {sp.get_piece_size()} pieces, {len(cases)} texts")


if __name__ == "__main__":
    main()
