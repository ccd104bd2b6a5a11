/*
 * Chat templates: a conversation (system / user / assistant messages) rendered to the
 * prompt text a model was trained on. Only the fixed formats below are supported; the
 * Jinja template stored in a model file is used to recognise the format, never executed.
 * BOS is the tokenizer's business, never the template's. Message content is inserted
 * verbatim (no trimming); special-token markers in the output are meant to be tokenized
 * as special tokens.
 *
 *   bitnet   System: {s}<|eot_id|>User: {u}<|eot_id|>Assistant: {a}<|eot_id|>
 *            generation prompt "Assistant: " (BitNet-b1.58-2B-4T's trained format)
 *   llama3   <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>
 *            generation prompt "<|start_header_id|>assistant<|end_header_id|>\n\n"
 *   llama2   [INST] <<SYS>>\n{s}\n<</SYS>>\n\n{u} [/INST] {a} </s><s>[INST] {u} [/INST]
 *            (a system message may only come first; the prompt ends with [/INST])
 *   falcon3  <|system|>\n{s}\n<|user|>\n{u}\n<|assistant|>\n{a}<|endoftext|>\n
 *            generation prompt "<|assistant|>\n"
 *   chatml   <|im_start|>{role}\n{content}<|im_end|>\n
 *            generation prompt "<|im_start|>assistant\n"
 */
#ifndef BITRACK_COORDINATOR_CHAT_H
#define BITRACK_COORDINATOR_CHAT_H

#include <stddef.h>

#include "bitrack/status.h"

struct br_chat_turn {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* NUL-terminated UTF-8 */
};

/* The supported template names, comma separated, for messages and help text. */
const char *br_chat_template_names(void);

/* Whether name is a supported template. */
int br_chat_template_known(const char *name);

/*
 * Picks a template for a model: from its architecture first when that settles it
 * (bitnet-b1.58 and bitnet-25 use "bitnet"; their embedded template is a placeholder),
 * else from markers in tokenizer.chat_template (may be NULL). Returns a static template
 * name, or NULL when nothing is recognised (the caller then needs an explicit choice).
 */
const char *br_chat_template_detect(const char *template_text, const char *arch);

/*
 * Renders msgs (n,) with the named template; with add_generation_prompt, appends the
 * opening of an assistant turn. On success *out is a NUL-terminated string the caller
 * frees, and *out_len (may be NULL) its length. Errors: BR_E_INVALID for an unknown
 * template (the message lists the choices), an unknown role, a NULL content, or a layout
 * the template cannot express; BR_E_NOMEM.
 */
int br_chat_render(const char *template_name, const struct br_chat_turn *msgs, size_t n,
                   int add_generation_prompt, char **out, size_t *out_len, struct br_err *err);

#endif
