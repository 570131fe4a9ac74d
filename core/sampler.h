/* sampler.h - turning one step's logits into the next token: penalties, truncation
 * (top-k / top-p / min-p), seeded sampling and log-probabilities; a streaming stop-string
 * matcher; and beam search as a state machine the engine drives (it owns the KV cache). */
#ifndef PORTA_SAMPLER_H
#define PORTA_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PORTA_SAMPLER_MAX_TOP_LOGPROBS 20 /* OpenAI's top_logprobs limit */

/* Sampling settings. Every field has an "off" value, which is also its default
 * (porta_sampler_params_default) except temperature, whose default is 1.
 * The processing order follows Hugging Face generate():
 *   logit bias, repetition penalty, presence/frequency penalties, no-repeat-ngram,
 *   min_new_tokens, then temperature, top-k, top-p, min-p, then the draw.
 * temperature == 0 means greedy: the arg-max of the processed logits (lowest id on ties);
 * top-k / top-p / min-p and the RNG are then not used. */
struct porta_sampler_params {
    float temperature;        /* >= 0; 0 = greedy                                        */
    int top_k;                /* >= 0; 0 = off                                           */
    float top_p;              /* (0, 1]; 1 = off. Keeps the smallest set of most likely
                                 tokens whose mass reaches top_p (after top-k)            */
    float min_p;              /* [0, 1]; 0 = off. Drops tokens with p < min_p * p_max     */
    float repetition_penalty; /* > 0; 1 = off. HF: for each distinct id in the whole
                                 context, logit > 0 ? logit / rp : logit * rp             */
    float presence_penalty;   /* finite; 0 = off. OpenAI, over generated tokens only:    */
    float frequency_penalty;  /*   logit -= presence * (count > 0) + frequency * count   */
    int no_repeat_ngram_size; /* >= 0; 0 = off. HF: bans every token that would complete
                                 an n-gram already present in the context                */
    int min_new_tokens;       /* >= 0; end-of-generation ids are banned until this many
                                 tokens were generated                                   */
    uint64_t seed;            /* the RNG (xoshiro256**) starts from this; the same seed
                                 and settings give the same tokens                       */
    const int32_t *bias_ids;  /* logit bias: logits[bias_ids[i]] += bias_vals[i];       */
    const float *bias_vals;   /*   a value <= -100 (or -inf) bans the token. Copied.     */
    int n_bias;
    const int32_t *eog_ids;   /* end-of-generation ids (for min_new_tokens). Copied.     */
    int n_eog;
    bool logprobs;            /* fill porta_sample_result.logprob                         */
    int top_logprobs;         /* [0, PORTA_SAMPLER_MAX_TOP_LOGPROBS]: alternatives to list */
};

/* Log-probabilities are the log-softmax of the processed logits: after bias, penalties,
 * no-repeat-ngram, min_new_tokens and temperature (none when greedy), before the
 * truncation by top-k / top-p / min-p. So they describe the model's adjusted
 * distribution, and every alternative gets a finite value unless it was banned. */
struct porta_sample_result {
    int32_t id;                                          /* the chosen token            */
    float logprob;                                       /* NAN unless params.logprobs  */
    int n_top;                                           /* alternatives filled          */
    int32_t top_ids[PORTA_SAMPLER_MAX_TOP_LOGPROBS];     /* most likely first            */
    float top_logprobs[PORTA_SAMPLER_MAX_TOP_LOGPROBS];
};

struct porta_sampler;

/* Every field off, temperature 1, seed 0. */
void porta_sampler_params_default(struct porta_sampler_params *p);

struct porta_config;

/* The defaults above, then the config's sampling section (temperature, top_p, top_k, min_p and
 * the three penalties): the starting point of every request, CLI and server alike. The seed
 * stays 0: each caller chooses how a random seed (sampling.seed = -1) is drawn. */
void porta_sampler_params_from_config(struct porta_sampler_params *p,
                                      const struct porta_config *cfg);

/* Validates p against n_vocab and makes a sampler. Returns 0, PORTA_E_RANGE (a value out of
 * range, logged with the field's name), PORTA_E_INVAL (NULL arrays) or PORTA_E_NOMEM.
 * The arrays in p are copied; the caller frees *out with porta_sampler_destroy(). */
int porta_sampler_create(const struct porta_sampler_params *p, int n_vocab,
                         struct porta_sampler **out);
void porta_sampler_destroy(struct porta_sampler *s); /* NULL ok */

/* Picks the next token. logits: n_vocab values, modified in place (penalties, bias and bans
 * are written into it; temperature is not). ctx: the prompt followed by the tokens generated
 * so far (n_ctx in all, the first n_prompt of them the prompt); ids outside the vocabulary
 * are ignored. A NaN logit counts as -inf, +inf as the largest finite float. Returns 0,
 * PORTA_E_INVAL (bad arguments) or PORTA_E_RANGE (every token banned). About 0.1 ms for
 * greedy or top-k over a 152k vocabulary, 0.25 ms for plain temperature sampling. */
int porta_sampler_sample(struct porta_sampler *s, float *logits, const int32_t *ctx, int n_ctx,
                         int n_prompt, struct porta_sample_result *out);

/* Applies only the logit processors (bias, penalties, no-repeat-ngram, min_new_tokens) in
 * place, as porta_sampler_sample does first. For callers that pick tokens themselves, e.g.
 * beam search. Returns 0 or PORTA_E_INVAL. */
int porta_sampler_process(struct porta_sampler *s, float *logits, const int32_t *ctx,
                          int n_ctx, int n_prompt);

/* ---- stop strings ------------------------------------------------------------------- */

/* Streaming matcher: generated text goes in piece by piece; what comes out is safe to show.
 * Text that might be the start of a stop string is held back until it is known not to be,
 * and so is an incomplete UTF-8 sequence at the end of the text seen so far. When a stop
 * string appears (possibly spread over several pieces), the text before it is released,
 * the stop string and everything after are dropped, and the matcher stays stopped. */
struct porta_stop;

/* stops: n strings (NULL or empty ones are ignored), copied. Returns 0, PORTA_E_INVAL or
 * PORTA_E_NOMEM; free with porta_stop_destroy(). */
int porta_stop_create(const char *const *stops, int n, struct porta_stop **out);
void porta_stop_destroy(struct porta_stop *st); /* NULL ok */

/* Feeds n bytes. *emit / *n_emit: text to show now, valid until the next call on st.
 * *hit: true once a stop string was found (the caller ends generation). Returns 0 or
 * PORTA_E_NOMEM. */
int porta_stop_feed(struct porta_stop *st, const char *piece, size_t n, const char **emit,
                    size_t *n_emit, bool *hit);

/* End of generation without a stop: releases whatever is held back. */
int porta_stop_flush(struct porta_stop *st, const char **emit, size_t *n_emit);

/* Forgets held text and the stopped state, for the next generation. */
void porta_stop_reset(struct porta_stop *st);

/* ---- beam search -------------------------------------------------------------------- */

/* As Hugging Face generate(num_beams=..., do_sample=False): each step scores every live
 * beam's continuations by (beam's sum of log-probs + log_softmax(logits)), keeps the best
 * 2*num_beams, turns the end-of-generation ones among the first num_beams ranks into
 * finished hypotheses (score = sum_logprobs / len^length_penalty, len = generated tokens
 * including the end token) and the first num_beams others into the next live beams.
 * The engine runs the model once per live beam, calls porta_beam_step(), then rearranges
 * its KV cache: new beam i continues parent[i] and appends token[i]. The first step has
 * one live beam (the prompt). No logit processors run here; a caller wanting penalties
 * applies porta_sampler_process() to each beam's logits first. */
enum porta_beam_early_stop {
    PORTA_BEAM_EARLY_HEURISTIC = 0, /* HF early_stopping=False: stop once no live beam can
                                       beat the worst kept hypothesis at the current length */
    PORTA_BEAM_EARLY_TRUE = 1,      /* stop as soon as num_beams hypotheses are finished    */
    PORTA_BEAM_EARLY_NEVER = 2,     /* HF "never": the same bound at the maximum length     */
};

struct porta_beam_params {
    int num_beams;           /* >= 1                                                    */
    float length_penalty;    /* finite; HF default 1.0                                  */
    int early_stopping;      /* enum porta_beam_early_stop                              */
    int max_new_tokens;      /* >= 1: live beams become hypotheses at this length      */
    int min_new_tokens;      /* >= 0: end ids banned before this many tokens            */
    const int32_t *eog_ids;  /* end-of-generation ids, copied                           */
    int n_eog;
};

struct porta_beam;

/* Defaults: num_beams 4, length_penalty 1, early_stopping heuristic, max_new_tokens 256. */
void porta_beam_params_default(struct porta_beam_params *p);

/* Returns 0, PORTA_E_RANGE (logged with the field) or PORTA_E_NOMEM. */
int porta_beam_create(const struct porta_beam_params *p, int n_vocab, struct porta_beam **out);
void porta_beam_destroy(struct porta_beam *b); /* NULL ok */

/* Live beams the next porta_beam_step() expects logits for (0 once done). */
int porta_beam_n_live(const struct porta_beam *b);

/* One step. logits[i]: n_vocab logits of live beam i (i < porta_beam_n_live()), not modified.
 * parent / token: room for num_beams entries; filled for the *n_live new live beams.
 * *done: true when the search is over (then *n_live is 0 and the hypotheses are final).
 * Returns 0, PORTA_E_INVAL (called when done, NULL logits) or PORTA_E_RANGE (a beam with
 * no finite logit). */
int porta_beam_step(struct porta_beam *b, const float *const *logits, int32_t *parent,
                    int32_t *token, int *n_live, bool *done);

/* Ends the search early (e.g. the context is full): live beams become hypotheses. */
int porta_beam_finish(struct porta_beam *b);

/* Number of finished hypotheses (at most num_beams). */
int porta_beam_n_hyps(const struct porta_beam *b);

/* Hypothesis i, best score first. tokens: the generated tokens without the end token, valid
 * until b is destroyed; *eog: the end token that finished it, or -1 if it hit the length
 * limit. Any out pointer may be NULL. Returns 0 or PORTA_E_RANGE. */
int porta_beam_hyp(const struct porta_beam *b, int i, const int32_t **tokens, int *n_tokens,
                   int32_t *eog, float *score, float *sum_logprobs);

/* Where the new live beams run after a step, for an engine that gives each beam a sequence
 * (slot) out of k: cur[j] is the sequence of old live beam j, parent[i] (from
 * porta_beam_step) the old beam new beam i continues. The first child of each parent keeps
 * the parent's sequence; the others take sequences no continuing beam holds and need the
 * parent's cache copied: next[i] is new beam i's sequence, copy_from[i] the sequence to copy
 * from, or -1. Copy every copy_from before appending tokens. n_live <= k <= 16. */
void porta_beam_place(int k, const int *cur, const int32_t *parent, int n_live, int *next,
                      int *copy_from);

#endif /* PORTA_SAMPLER_H */
