/*
 * Chat template rendering and detection (formats listed in chat.h). Rendering appends to
 * a growable buffer; every format is a few fixed strings around the message content.
 */
#include "coordinator/chat.h"

#include <stdlib.h>
#include <string.h>

static const char *const template_names[] = {"bitnet", "llama3", "llama2", "falcon3", "chatml"};
#define N_TEMPLATES (sizeof template_names / sizeof template_names[0])

const char *br_chat_template_names(void)
{
    return "bitnet, llama3, llama2, falcon3, chatml";
}

int br_chat_template_known(const char *name)
{
    for (size_t i = 0; name && i < N_TEMPLATES; i++)
        if (strcmp(name, template_names[i]) == 0) return 1;
    return 0;
}

const char *br_chat_template_detect(const char *template_text, const char *arch)
{
    if (arch && (strcmp(arch, "bitnet-b1.58") == 0 || strcmp(arch, "bitnet-25") == 0))
        return "bitnet";
    if (template_text) {
        /* Most distinctive markers first: "<|assistant|>" and "Assistant: " are short
         * enough to appear inside other formats' templates. */
        if (strstr(template_text, "<|start_header_id|>")) return "llama3";
        if (strstr(template_text, "<|im_start|>")) return "chatml";
        if (strstr(template_text, "[INST]")) return "llama2";
        if (strstr(template_text, "<|assistant|>")) return "falcon3";
        if (strstr(template_text, "Assistant: ")) return "bitnet";
    }
    return NULL;
}

struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void put(struct sbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };

static void render_bitnet(struct sbuf *b, const struct br_chat_turn *m, const enum role *r,
                          size_t n, int gen)
{
    static const char *const prefix[] = {"System: ", "User: ", "Assistant: "};
    for (size_t i = 0; i < n; i++) {
        put(b, prefix[r[i]]);
        put(b, m[i].content);
        put(b, "<|eot_id|>");
    }
    if (gen) put(b, "Assistant: ");
}

/* Every turn as open ROLE mid CONTENT end (llama3, chatml); the generation prompt opens
 * the assistant's turn. */
static void render_tagged(struct sbuf *b, const struct br_chat_turn *m, size_t n, int gen,
                          const char *open, const char *mid, const char *end)
{
    for (size_t i = 0; i < n; i++) {
        put(b, open);
        put(b, m[i].role);
        put(b, mid);
        put(b, m[i].content);
        put(b, end);
    }
    if (gen) {
        put(b, open);
        put(b, "assistant");
        put(b, mid);
    }
}

static void render_falcon3(struct sbuf *b, const struct br_chat_turn *m, const enum role *r,
                           size_t n, int gen)
{
    for (size_t i = 0; i < n; i++) {
        put(b, "<|");
        put(b, m[i].role);
        put(b, "|>\n");
        put(b, m[i].content);
        if (r[i] == ROLE_ASSISTANT) {
            put(b, "<|endoftext|>");
            if (i + 1 < n) put(b, "\n");
        } else {
            put(b, "\n");
        }
    }
    if (gen) put(b, "<|assistant|>\n");
}

/* Llama 2: the system prompt is folded into the first user turn; every user turn after
 * the first is preceded by the BOS marker "<s>" as text, every assistant turn closed by
 * " </s>". The leading BOS comes from the tokenizer. The prompt already ends where the
 * assistant speaks, so there is no separate generation prompt. */
static int render_llama2(struct sbuf *b, const struct br_chat_turn *m, const enum role *r, size_t n,
                         struct br_err *err)
{
    const char *sys = NULL;
    int turns = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i] == ROLE_SYSTEM) {
            if (i != 0)
                return br_err_set(err, BR_E_INVALID,
                                  "chat template llama2: message %zu: a system message must "
                                  "come first",
                                  i);
            sys = m[i].content;
        } else if (r[i] == ROLE_USER) {
            if (turns++ > 0) put(b, "<s>");
            put(b, "[INST] ");
            if (sys) {
                put(b, "<<SYS>>\n");
                put(b, sys);
                put(b, "\n<</SYS>>\n\n");
                sys = NULL;
            }
            put(b, m[i].content);
            put(b, " [/INST]");
        } else {
            put(b, " ");
            put(b, m[i].content);
            put(b, " </s>");
        }
    }
    if (sys) {
        /* A system message alone still opens an instruction, so the model sees it. */
        put(b, "[INST] <<SYS>>\n");
        put(b, sys);
        put(b, "\n<</SYS>>\n\n [/INST]");
    }
    return BR_OK;
}

int br_chat_render(const char *template_name, const struct br_chat_turn *msgs, size_t n,
                   int add_generation_prompt, char **out, size_t *out_len, struct br_err *err)
{
    *out = NULL;
    if (!br_chat_template_known(template_name))
        return br_err_set(err, BR_E_INVALID, "unknown chat template '%s' (choices: %s)",
                          template_name ? template_name : "(null)", br_chat_template_names());
    if (n > 0 && !msgs) return br_err_set(err, BR_E_INVALID, "chat: no messages array");

    enum role roles_stack[64];
    enum role *roles = roles_stack;
    if (n > sizeof roles_stack / sizeof roles_stack[0]) {
        roles = malloc(n * sizeof *roles);
        if (!roles) return br_err_set(err, BR_E_NOMEM, "chat: %zu messages", n);
    }
    int rc = BR_OK;
    struct sbuf b = {0};
    for (size_t i = 0; i < n; i++) {
        const char *role = msgs[i].role;
        if (role && strcmp(role, "system") == 0)
            roles[i] = ROLE_SYSTEM;
        else if (role && strcmp(role, "user") == 0)
            roles[i] = ROLE_USER;
        else if (role && strcmp(role, "assistant") == 0)
            roles[i] = ROLE_ASSISTANT;
        else {
            rc = br_err_set(err, BR_E_INVALID,
                            "chat: message %zu has role '%s' (system, user or assistant)", i,
                            role ? role : "(null)");
            goto done;
        }
        if (!msgs[i].content) {
            rc = br_err_set(err, BR_E_INVALID, "chat: message %zu has no content", i);
            goto done;
        }
    }

    put(&b, ""); /* an empty conversation still yields a string */
    if (strcmp(template_name, "bitnet") == 0)
        render_bitnet(&b, msgs, roles, n, add_generation_prompt);
    else if (strcmp(template_name, "llama3") == 0)
        render_tagged(&b, msgs, n, add_generation_prompt, "<|start_header_id|>",
                      "<|end_header_id|>\n\n", "<|eot_id|>");
    else if (strcmp(template_name, "chatml") == 0)
        render_tagged(&b, msgs, n, add_generation_prompt, "<|im_start|>", "\n", "<|im_end|>\n");
    else if (strcmp(template_name, "falcon3") == 0)
        render_falcon3(&b, msgs, roles, n, add_generation_prompt);
    else
        rc = render_llama2(&b, msgs, roles, n, err);
    if (rc == BR_OK && b.oom) rc = br_err_set(err, BR_E_NOMEM, "chat: rendering");
    if (rc != BR_OK) {
        free(b.p);
        goto done;
    }
    *out = b.p;
    if (out_len) *out_len = b.len;
done:
    if (roles != roles_stack) free(roles);
    return rc;
}
