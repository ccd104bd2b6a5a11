/* Tests of common/: status text, error messages, half and bfloat16 conversions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "bitrack/fp.h"
#include "bitrack/status.h"

static void test_strerror(void **state)
{
    (void)state;
    assert_string_equal(br_strerror(BR_OK), "success");
    assert_string_equal(br_strerror(BR_E_FORMAT), "malformed file");
    assert_string_equal(br_strerror(12345), "unknown error");
}

static void test_err_set_prefix(void **state)
{
    (void)state;
    struct br_err e = {{0}};
    assert_int_equal(br_err_set(&e, BR_E_FORMAT, "bad field %s at %d", "x", 7), BR_E_FORMAT);
    assert_string_equal(e.msg, "bad field x at 7");
    br_err_prefix(&e, BR_E_FORMAT, "file %s", "a.gguf");
    assert_string_equal(e.msg, "file a.gguf: bad field x at 7");
    assert_int_equal(br_err_set(NULL, BR_E_IO, "ignored"), BR_E_IO);
}

static void test_f16_known_values(void **state)
{
    (void)state;
    assert_int_equal(br_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(br_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(br_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(br_f32_to_f16(65520.0f), 0x7c00); /* rounds up to inf */
    assert_int_equal(br_f32_to_f16(5.9604644775390625e-8f), 0x0001);
    assert_int_equal(br_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie to even */
    assert_int_equal(br_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02); /* tie to even, up */
    assert_true(br_f16_to_f32(0x3555) > 0.333f && br_f16_to_f32(0x3555) < 0.334f);
    assert_true(br_f16_to_f32(0x0001) == 5.9604644775390625e-8f);
    assert_true(isinf(br_f16_to_f32(0x7c00)));
    assert_true(isnan(br_f16_to_f32(0x7e00)));
}

static void test_f16_round_trip_all(void **state)
{
    (void)state;
    /* Every finite half converts to float and back unchanged. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* nan payloads */
        assert_int_equal(br_f32_to_f16(br_f16_to_f32((uint16_t)h)), h);
    }
}

static void test_bf16(void **state)
{
    (void)state;
    assert_int_equal(br_f32_to_bf16(1.0f), 0x3f80);
    assert_true(br_bf16_to_f32(0xc000) == -2.0f);
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f)) continue;
        assert_int_equal(br_f32_to_bf16(br_bf16_to_f32((uint16_t)h)), h);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_err_set_prefix),
        cmocka_unit_test(test_f16_known_values),
        cmocka_unit_test(test_f16_round_trip_all),
        cmocka_unit_test(test_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
