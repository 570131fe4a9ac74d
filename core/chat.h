/* chat.h - chat templates: a model's tokenizer.chat_template is recognized by distinctive
 * substrings and one of a few known formats is rendered in C (template code is never run);
 * plus a streaming splitter of generated text into reasoning (<think>...</think>) and content. */
#ifndef PORTA_CHAT_H
#define PORTA_CHAT_H

#include <stdbool.h>
#include <stddef.h>

/* Known formats. Names for porta_chat_tmpl_from_name() in quotes.
 * Each renders exactly what its Jinja template renders for messages made only of role and
 * content (no tools / tool_calls arguments), with the caller's bos/eos text for bos_token /
 * eos_token. */
enum porta_chat_tmpl {
    PORTA_CHAT_CHATML = 0,      /* "chatml": <|im_start|>role\ncontent<|im_end|>\n, no default
                                   system prompt (the fallback for unknown templates)           */
    PORTA_CHAT_QWEN2,           /* "qwen2" (Qwen1.5 / Qwen2-Instruct): ChatML with the system
                                   prompt "You are a helpful assistant." when none is first    */
    PORTA_CHAT_QWEN25,          /* "qwen2.5" (alias "qwen"): ChatML, default system prompt "You
                                   are Qwen, created by Alibaba Cloud. You are a helpful
                                   assistant.", tool messages as <tool_response> user turns    */
    PORTA_CHAT_SMOLLM,          /* "smollm2" (alias "smollm"): ChatML, default system prompt
                                   "You are a helpful AI assistant named SmolLM, trained by
                                   Hugging Face"                                               */
    PORTA_CHAT_LLAMA3,          /* "llama3": <|start_header_id|>role<|end_header_id|>\n\n
                                   trimmed content <|eot_id|>, bos before the first message    */
    PORTA_CHAT_LLAMA31,         /* "llama3.1" (also 3.2/3.3): a system block that always opens
                                   with "Cutting Knowledge Date: December 2023\nToday Date: 26
                                   Jul 2024\n\n" (the template's fallback date)                */
    PORTA_CHAT_DEEPSEEK_R1,     /* "deepseek-r1" (R1-Distill-Qwen/Llama as first published):
                                   bos + system text, <｜User｜>..., <｜Assistant｜>answer
                                   <｜end▁of▁sentence｜> with the part up to </think> removed;
                                   generation prompt "<｜Assistant｜>"                        */
    PORTA_CHAT_DEEPSEEK_R1_THINK, /* "deepseek-r1-think": the later revision whose generation
                                   prompt is "<｜Assistant｜><think>\n" (generation starts
                                   inside the reasoning)                                       */
    PORTA_CHAT_LLAMA2,          /* "llama2": <s>[INST] <<SYS>>\nsys\n<</SYS>>\n\nuser [/INST]
                                   answer </s>; roles must alternate user/assistant            */
    PORTA_CHAT_COUNT
};

struct porta_chat_msg {
    const char *role;    /* "system", "user", "assistant", "tool" (others as each template) */
    const char *content; /* NULL is rendered as "" */
};

/* Recognizes a tokenizer.chat_template text. Always sets *out: an unknown, NULL or empty
 * template gives PORTA_CHAT_CHATML and logs a warning. Returns 0, or PORTA_E_INVAL if out is
 * NULL. */
int porta_chat_detect(const char *template_text, enum porta_chat_tmpl *out);

/* A format by name (see the enum; case-sensitive). Returns 0 or PORTA_E_NOTFOUND (logged
 * with the list of names). */
int porta_chat_tmpl_from_name(const char *name, enum porta_chat_tmpl *out);

/* The canonical name of a format, "unknown" if out of range. */
const char *porta_chat_tmpl_name(enum porta_chat_tmpl t);

/* Whether the generation prompt of t already opens the reasoning part (so a reasoning
 * splitter should start inside it). */
bool porta_chat_tmpl_starts_reasoning(enum porta_chat_tmpl t);

/* Renders n >= 1 messages as template t would. bos_text / eos_text: the model's BOS / EOS
 * token text where the template writes bos_token / eos_token (NULL = ""); the caller then
 * tokenizes the result with special tokens recognized and adds no second BOS.
 * add_generation_prompt: append the opening of the assistant's turn (LLaMA-2's template has
 * none). *out: a malloc'd NUL-terminated string the caller frees. Returns 0, PORTA_E_INVAL
 * (bad arguments, a NULL role, or a conversation the template rejects, e.g. LLaMA-2 roles not
 * alternating; logged) or PORTA_E_NOMEM. */
int porta_chat_render(enum porta_chat_tmpl t, const struct porta_chat_msg *msgs, int n,
                      bool add_generation_prompt, const char *bos_text, const char *eos_text,
                      char **out);

/* ---- reasoning / content split ------------------------------------------------------- */

/* Splits generated text, fed piece by piece, into reasoning (between <think> and </think>)
 * and content. A leading "<think>" (after optional whitespace) opens the reasoning; with
 * start_in_reasoning (the prompt already ended in "<think>\n", see
 * porta_chat_tmpl_starts_reasoning) the text is reasoning from the start, and a leading
 * "<think>" is still skipped. Whitespace right after <think> and right after </think> is
 * dropped. Text that might be a tag's beginning is held until known. */
struct porta_think;

struct porta_think_delta {
    const char *reasoning; /* valid until the next call on the splitter */
    size_t n_reasoning;
    const char *content;
    size_t n_content;
};

int porta_think_create(bool start_in_reasoning, struct porta_think **out); /* 0 / E_NOMEM */
void porta_think_destroy(struct porta_think *t); /* NULL ok */

/* Feeds n bytes; *d receives what is now known to be reasoning and content. 0 or E_NOMEM. */
int porta_think_feed(struct porta_think *t, const char *piece, size_t n,
                     struct porta_think_delta *d);

/* End of generation: releases held text (to the part it was heading for). */
int porta_think_flush(struct porta_think *t, struct porta_think_delta *d);

/* Whether the splitter is inside the reasoning part now. */
bool porta_think_in_reasoning(const struct porta_think *t);

#endif /* PORTA_CHAT_H */
