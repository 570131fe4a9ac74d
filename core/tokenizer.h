/* tokenizer.h - text <-> token ids from a GGUF file's tokenizer.* metadata: byte-level BPE
 * ("gpt2": GPT-2, LLaMA-3, Qwen2, DeepSeek, SmolLM, ... pre-tokenizers, split with PCRE2) and
 * SentencePiece BPE ("llama"), special tokens, and a streaming UTF-8-safe detokenizer. */
#ifndef PORTA_TOKENIZER_H
#define PORTA_TOKENIZER_H

#include "porta.h"

struct porta_gguf;
struct porta_tokenizer;

#define PORTA_TOKEN_MAX_LEN 1024   /* longest token text accepted from a file, in bytes */

enum porta_tok_kind { PORTA_TOK_SPM = 1, PORTA_TOK_BPE = 2 };

/* GGUF token types (tokenizer.ggml.token_type). */
enum porta_tok_type {
    PORTA_TOKT_UNDEFINED = 0, PORTA_TOKT_NORMAL = 1, PORTA_TOKT_UNKNOWN = 2,
    PORTA_TOKT_CONTROL = 3, PORTA_TOKT_USER = 4, PORTA_TOKT_UNUSED = 5, PORTA_TOKT_BYTE = 6,
};

/* Builds a tokenizer from g's tokenizer.* keys; every piece of data it keeps is copied, so g
 * may be closed afterwards. The data is untrusted: a merge naming an unknown token, a token
 * longer than PORTA_TOKEN_MAX_LEN, a duplicate token in a BPE vocab, a special token id out of
 * range, a scores or token_type array whose length differs from the token list, ... are
 * PORTA_E_FORMAT with a message naming the key. An unknown tokenizer.ggml.model is
 * PORTA_E_UNSUPPORTED; an unknown tokenizer.ggml.pre warns and uses the default split.
 * Returns 0 and *out (free with porta_tokenizer_destroy), or a negative status and *out = NULL. */
int porta_tokenizer_load(const struct porta_gguf *g, struct porta_tokenizer **out);
void porta_tokenizer_destroy(struct porta_tokenizer *t);                 /* NULL ok */

/* Tokenizes len bytes of text (any bytes; invalid UTF-8 never fails). add_special adds BOS/EOS
 * as the model's add_bos_token / add_eos_token say. parse_special: control tokens written in
 * the text (e.g. "<|im_start|>") become their ids; without it they are tokenized as plain text.
 * User-defined tokens (type 4) are always matched, as Hugging Face tokenizers do.
 * On success *ids is malloc'd (caller frees; NULL when *n_ids is 0). Returns 0,
 * PORTA_E_NOMEM or PORTA_E_INVAL (NULL arguments, text longer than INT32_MAX). */
int porta_tokenize(const struct porta_tokenizer *t, const char *text, size_t len,
                   bool add_special, bool parse_special, int32_t **ids, int *n_ids);

/* The raw bytes one token stands for (byte tokens <0xNN> -> one byte, GPT-2 byte mapping
 * undone, SentencePiece U+2581 -> space). Control and unknown tokens give their text when
 * special is true and nothing otherwise; unused tokens give nothing. The piece is not NUL
 * terminated and may be a fragment of a UTF-8 character. Writes at most cap bytes; *len is
 * always the full length. Returns 0, PORTA_E_RANGE (cap too small: nothing useful written)
 * or PORTA_E_INVAL (id out of range). */
int porta_token_piece(const struct porta_tokenizer *t, int32_t id, bool special, char *buf,
                      size_t cap, size_t *len);

/* Concatenated pieces of n ids into a malloc'd, NUL-terminated buffer (*text, caller frees),
 * byte exact: detokenize(tokenize(s)) == s. strip_space drops the space a SentencePiece
 * tokenizer put in front of the text (only when it adds one). Returns 0, PORTA_E_NOMEM or
 * PORTA_E_INVAL (an id out of range). */
int porta_detokenize(const struct porta_tokenizer *t, const int32_t *ids, int n, bool special,
                     bool strip_space, char **text, size_t *len);

enum porta_tok_kind porta_tokenizer_kind(const struct porta_tokenizer *t);
const char *porta_tokenizer_pre(const struct porta_tokenizer *t);   /* pre-tokenizer in use */
int32_t porta_tokenizer_n_vocab(const struct porta_tokenizer *t);
int32_t porta_tokenizer_bos(const struct porta_tokenizer *t);       /* -1 if none */
int32_t porta_tokenizer_eos(const struct porta_tokenizer *t);       /* -1 if none */
bool porta_tokenizer_adds_bos(const struct porta_tokenizer *t);
bool porta_tokenizer_adds_eos(const struct porta_tokenizer *t);
/* End of generation: eos, eot, eom ids from metadata and tokens such as <|im_end|>,
 * <|eot_id|>, <｜end▁of▁sentence｜>, <|endoftext|>, <end_of_turn> when present. */
bool porta_tokenizer_is_eog(const struct porta_tokenizer *t, int32_t id);
/* Token type (enum porta_tok_type); -1 for an id out of range. */
int porta_tokenizer_type(const struct porta_tokenizer *t, int32_t id);
/* Id of the token whose text is exactly s (e.g. "<|im_start|>"), or -1. */
int32_t porta_tokenizer_find(const struct porta_tokenizer *t, const char *s);
/* A token's stored text (not NUL-terminated) and its length; NULL for an id out of range. */
const char *porta_tokenizer_text(const struct porta_tokenizer *t, int32_t id, size_t *len);

/* Streaming detokenizer: push ids one at a time and get back only complete UTF-8 characters;
 * an incomplete character is held until the next token completes it. Bytes that can never
 * form a valid character come out as U+FFFD, so the output is always valid UTF-8.
 * Caller-owned, nothing to free; the returned text lives in the struct until the next call. */
struct porta_detok {
    const struct porta_tokenizer *t;
    bool special;                 /* render control tokens' text */
    bool strip_space;             /* SPM: drop the prefix space of the first piece */
    bool started;
    int n_held;
    unsigned char held[4];        /* incomplete UTF-8 character carried over */
    char out[4 * (PORTA_TOKEN_MAX_LEN + 8)];
};

/* strip_space: see porta_detokenize; use it when the ids start at the beginning of a text,
 * not when decoding a continuation (a generated reply keeps its leading space). */
void porta_detok_init(struct porta_detok *d, const struct porta_tokenizer *t, bool special,
                      bool strip_space);
/* Decodes one more id; *out and *len: the complete UTF-8 text it releases (possibly empty).
 * Returns 0 or PORTA_E_INVAL (id out of range; nothing consumed). */
int porta_detok_push(struct porta_detok *d, int32_t id, const char **out, size_t *len);
/* Releases a held incomplete character as U+FFFD and resets the stream. */
void porta_detok_flush(struct porta_detok *d, const char **out, size_t *len);

#endif /* PORTA_TOKENIZER_H */
