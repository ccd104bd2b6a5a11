/* Tests of coordinator/chat: exact renderings of every template, detection, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/chat.h"

static const struct br_chat_turn conv[4] = {
    {"system", "Be brief."},
    {"user", "Hi"},
    {"assistant", "Hello!"},
    {"user", "2+2?"},
};

static void expect(const char *tmpl, const struct br_chat_turn *m, size_t n, int gen,
                   const char *want)
{
    char *out = NULL;
    size_t len = 0;
    struct br_err e = {{0}};
    int rc = br_chat_render(tmpl, m, n, gen, &out, &len, &e);
    if (rc != BR_OK) fail_msg("%s: %s", tmpl, e.msg);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    free(out);
}

static void test_bitnet(void **state)
{
    (void)state;
    expect("bitnet", conv, 4, 1,
           "System: Be brief.<|eot_id|>User: Hi<|eot_id|>Assistant: Hello!<|eot_id|>"
           "User: 2+2?<|eot_id|>Assistant: ");
    expect("bitnet", conv + 1, 1, 0, "User: Hi<|eot_id|>");
}

static void test_llama3(void **state)
{
    (void)state;
    expect("llama3", conv, 4, 1,
           "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect("llama3", conv + 1, 1, 0, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

static void test_llama2(void **state)
{
    (void)state;
    expect("llama2", conv, 4, 1,
           "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] 2+2? [/INST]");
    expect("llama2", conv + 1, 3, 1, "[INST] Hi [/INST] Hello! </s><s>[INST] 2+2? [/INST]");
    expect("llama2", conv, 1, 1, "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n [/INST]");
    /* A system message later in the conversation cannot be expressed. */
    const struct br_chat_turn late[2] = {{"user", "a"}, {"system", "b"}};
    char *out = (char *)1;
    struct br_err e = {{0}};
    assert_int_equal(br_chat_render("llama2", late, 2, 1, &out, NULL, &e), BR_E_INVALID);
    assert_null(out);
    assert_non_null(strstr(e.msg, "message 1"));
}

static void test_falcon3(void **state)
{
    (void)state;
    expect("falcon3", conv, 4, 1,
           "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!<|endoftext|>\n"
           "<|user|>\n2+2?\n<|assistant|>\n");
    expect("falcon3", conv, 3, 0,
           "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!<|endoftext|>");
}

static void test_chatml(void **state)
{
    (void)state;
    expect("chatml", conv, 4, 1,
           "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
           "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
           "<|im_start|>assistant\n");
    expect("chatml", NULL, 0, 1, "<|im_start|>assistant\n");
    expect("chatml", NULL, 0, 0, "");
}

static void test_content_verbatim(void **state)
{
    (void)state;
    /* Whitespace and markers inside content are passed through untouched. */
    const struct br_chat_turn m[1] = {{"user", "  x\n<|eot_id|> "}};
    expect("bitnet", m, 1, 0, "User:   x\n<|eot_id|> <|eot_id|>");
}

static void test_errors(void **state)
{
    (void)state;
    char *out = NULL;
    struct br_err e = {{0}};
    assert_int_equal(br_chat_render("vicuna", conv, 4, 1, &out, NULL, &e), BR_E_INVALID);
    assert_null(out);
    assert_non_null(strstr(e.msg, "vicuna"));
    assert_non_null(strstr(e.msg, "bitnet, llama3, llama2, falcon3, chatml"));
    assert_int_equal(br_chat_render(NULL, conv, 4, 1, &out, NULL, &e), BR_E_INVALID);
    const struct br_chat_turn bad_role[2] = {{"user", "a"}, {"tool", "b"}};
    assert_int_equal(br_chat_render("chatml", bad_role, 2, 1, &out, NULL, &e), BR_E_INVALID);
    assert_non_null(strstr(e.msg, "'tool'"));
    const struct br_chat_turn no_content[1] = {{"user", NULL}};
    assert_int_equal(br_chat_render("chatml", no_content, 1, 1, &out, NULL, &e), BR_E_INVALID);
    assert_true(br_chat_template_known("falcon3"));
    assert_false(br_chat_template_known("Falcon3"));
}

static void test_many_messages(void **state)
{
    (void)state;
    /* More messages than the renderer's stack buffer of roles. */
    struct br_chat_turn m[200];
    for (int i = 0; i < 200; i++) m[i] = (struct br_chat_turn){i % 2 ? "assistant" : "user", "x"};
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(br_chat_render("bitnet", m, 200, 1, &out, &len, NULL), BR_OK);
    assert_int_equal(len, 100 * strlen("User: x<|eot_id|>Assistant: x<|eot_id|>") +
                              strlen("Assistant: "));
    free(out);
}

static void test_detect(void **state)
{
    (void)state;
    const char *llama3 =
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ "
        "message['content'] | trim + '<|eot_id|>' %}{{ content }}{% endfor %}";
    const char *chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + "
                         "'\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
    const char *llama2 = "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
                         "message['content'] + ' [/INST]' }}{% endif %}";
    const char *falcon3 = "{% if message['role'] == 'user' %}{{ '<|user|>\\n' + "
                          "message['content'] + '\\n' }}{% endif %}{{ '<|assistant|>\\n' }}";
    const char *bitnet = "{{ 'User: ' + message['content'] + '<|eot_id|>' }}{{ 'Assistant: ' }}";
    assert_string_equal(br_chat_template_detect(llama3, "llama"), "llama3");
    assert_string_equal(br_chat_template_detect(chatml, "qwen2"), "chatml");
    assert_string_equal(br_chat_template_detect(llama2, "llama"), "llama2");
    assert_string_equal(br_chat_template_detect(falcon3, "llama"), "falcon3");
    assert_string_equal(br_chat_template_detect(bitnet, NULL), "bitnet");
    /* BitNet's architecture wins over its placeholder template. */
    assert_string_equal(br_chat_template_detect(llama3, "bitnet-b1.58"), "bitnet");
    assert_string_equal(br_chat_template_detect(NULL, "bitnet-25"), "bitnet");
    assert_null(br_chat_template_detect(NULL, "llama"));
    assert_null(br_chat_template_detect("{{ messages }}", NULL));
    assert_null(br_chat_template_detect(NULL, NULL));
    /* Every detected name renders. */
    const char *names[5] = {llama3, chatml, llama2, falcon3, bitnet};
    for (int i = 0; i < 5; i++)
        assert_true(br_chat_template_known(br_chat_template_detect(names[i], NULL)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bitnet), cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_llama2), cmocka_unit_test(test_falcon3),
        cmocka_unit_test(test_chatml), cmocka_unit_test(test_content_verbatim),
        cmocka_unit_test(test_errors), cmocka_unit_test(test_many_messages),
        cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
