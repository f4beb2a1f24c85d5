/* Fuzz target for what a user feeds baatt from outside: the .npy reader (from a regular file and
 * from a pipe, where no size bounds the header's shape), the config/shape validation, and the
 * selection rule on arbitrary logits (NaN and infinities included). The first byte picks which;
 * the rest is the input. Built with libFuzzer (clang -fsanitize=fuzzer, tests/fuzz/CMakeLists.txt)
 * and, for the regular suite, with replay.c, which runs the seed corpus through the same function.
 * Every property is checked with abort(): a failure is a crash the fuzzer reports. */
#define _GNU_SOURCE /* memfd_create */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "baatt.h"
#include "internal.h"

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            fprintf(stderr, "fuzz_inputs: %s:%d: %s\n", __FILE__, __LINE__, #cond);                                    \
            abort();                                                                                                   \
        }                                                                                                              \
    } while (0)

/* The contract of baatt_npy_read, whatever the bytes: a status, a one-line message naming the
 * path on failure, no data after a failure, consistent metadata after success. */
static void check_read(const char *path, size_t n)
{
    baatt_npy a;
    char msg[512];
    memset(&a, 0x5a, sizeof a);
    baatt_status s = baatt_npy_read(path, &a, msg, sizeof msg);
    if (s) {
        CHECK(s == BAATT_ERROR_FILE_FORMAT || s == BAATT_ERROR_IO || s == BAATT_ERROR_OUT_OF_HOST_MEMORY);
        CHECK(a.data == NULL && a.count == 0);
        CHECK(strstr(msg, path) == msg && !strchr(msg, '\n'));
        return;
    }
    CHECK(a.data != NULL && a.rank <= BAATT_NPY_MAX_RANK && !msg[0]);
    uint64_t count = 1;
    for (uint32_t i = 0; i < a.rank; i++) count *= a.shape[i];
    CHECK(count == a.count);
    size_t bytes = (size_t)a.count * baatt_npy_dtype_size(a.dtype);
    CHECK(bytes <= n);                                                        /* the data came from the input */
    volatile uint8_t sink = bytes ? ((const uint8_t *)a.data)[bytes - 1] : 0; /* ASan: the size */
    (void)sink;
    baatt_npy_free(&a);
}

static void npy_regular(const uint8_t *p, size_t n)
{
    static int fd = -1;
    if (fd < 0) fd = memfd_create("fuzz.npy", 0);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, 0) == 0);
    CHECK(pwrite(fd, p, n, 0) == (ssize_t)n);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    check_read(path, n);
}

/* A pipe holds 64 KiB without a reader, so the writer needs no thread for inputs up to that. */
static void npy_pipe(const uint8_t *p, size_t n)
{
    if (n > 65536) return;
    int fd[2];
    CHECK(pipe(fd) == 0);
    CHECK(write(fd[1], p, n) == (ssize_t)n);
    close(fd[1]);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", fd[0]);
    check_read(path, n);
    close(fd[0]);
}

/* Any bit pattern as a config: the check returns a known status with a message, and a config it
 * accepts has sane derived sizes. */
static void config(const uint8_t *p, size_t n)
{
    baatt_config c = baatt_config_default();
    memcpy(&c, p, n < sizeof c ? n : sizeof c);
    char msg[256];
    baatt_status s = baatt_config_check(&c, msg, sizeof msg);
    CHECK(strlen(msg) < sizeof msg);
    CHECK(strncmp(baatt_status_string(s), "BAATT_", 6) == 0);
    if (s) {
        CHECK(msg[0] && s >= 100 && s < 200);
        return;
    }
    CHECK(isfinite(baatt_config_scale(&c)) && baatt_config_scale(&c) > 0);
    if (c.dense) return;
    uint32_t nq = baatt_config_q_blocks(&c), nk = baatt_config_k_blocks(&c);
    CHECK((uint64_t)nq * c.block_size >= c.q_len && (uint64_t)(nq - 1) * c.block_size < c.q_len);
    CHECK((uint64_t)nk * c.block_size >= c.kv_len && (uint64_t)(nk - 1) * c.block_size < c.kv_len);
    uint32_t k = baatt_config_keep_blocks(&c);
    CHECK(k >= 1 && k <= nk);
    uint32_t m = baatt_config_clamp_blocks(&c, nk + 1);
    CHECK(m >= 1 && m <= nk);
}

/* Arbitrary floats as one row of block logits: the order is a permutation, NaN first (lower index
 * first among NaNs), then descending; the threshold prefix stays within the row. */
static void selection(const uint8_t *p, size_t n)
{
    uint32_t nk = (uint32_t)(n / 4);
    if (!nk || nk > 4096) return;
    float *l = malloc(nk * sizeof *l);
    int32_t *order = malloc(nk * sizeof *order), *tmp = malloc(nk * sizeof *tmp);
    CHECK(l && order && tmp);
    memcpy(l, p, nk * sizeof *l);
    baatt_argsort_desc(l, nk, order, tmp);
    uint8_t *seen = calloc(nk, 1);
    CHECK(seen);
    for (uint32_t i = 0; i < nk; i++) {
        CHECK(order[i] >= 0 && (uint32_t)order[i] < nk && !seen[order[i]]);
        seen[order[i]] = 1;
        if (!i) continue;
        float a = l[order[i - 1]], b = l[order[i]];
        CHECK(!isnan(b) || (isnan(a) && order[i - 1] < order[i]));
        CHECK(isnan(a) || isnan(b) || a > b || (a == b && order[i - 1] < order[i]));
    }
    double theta = (p[0] + 1) / 256.0;
    CHECK(baatt_mass_prefix(l, order, nk, theta) <= nk);
    free(seen);
    free(l);
    free(order);
    free(tmp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0: npy_regular(p, n); break;
    case 1: npy_pipe(p, n); break;
    case 2: config(p, n); break;
    default: selection(p, n); break;
    }
    return 0;
}
