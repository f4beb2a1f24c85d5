/* .npy reader and writer: round trips, byte-exact NumPy files (1.0, 2.0, 3.0), and a catalogue
 * of malformed files, each of which must fail with BAATT_ERROR_FILE_FORMAT, a one-line message
 * naming the path and the problem, and out.data == NULL. No GPU is needed. */
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs of spaces, for spelling out NumPy's header padding in string literals. */
#define SP2 "  "
#define SP4 SP2 SP2
#define SP8 SP4 SP4
#define SP16 SP8 SP8
#define SP32 SP16 SP16

/* Bytes numpy 2.4 writes (numpy.lib.format.write_array with the version named). Each header is
 * the dict, 20 spare "growth" spaces for rank > 0, then padding to a 64-byte boundary and '\n'. */
/* np.save(f, np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1) */
static const char k_v1_f32[] = "\x93NUMPY\x01\x00\x76\x00"
                               "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" SP32 SP16 SP8 SP2 "\n"
                               "\x00\x00\x80\xbf"
                               "\x00\x00\x00\xbf"
                               "\x00\x00\x00\x00"
                               "\x00\x00\x00\x3f"
                               "\x00\x00\x80\x3f"
                               "\x00\x00\xc0\x3f";
/* np.array([-2, -1, 0, 2147483647], np.int32), version (2, 0) */
static const char k_v2_i32[] = "\x93NUMPY\x02\x00\x74\x00\x00\x00"
                               "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }" SP32 SP16 SP8 SP2 "\n"
                               "\xfe\xff\xff\xff"
                               "\xff\xff\xff\xff"
                               "\x00\x00\x00\x00"
                               "\xff\xff\xff\x7f";
/* np.array([1, -2, 0.5, 65504], np.float16).reshape(2, 1, 2), version (3, 0) */
static const char k_v3_f16[] = "\x93NUMPY\x03\x00\x74\x00\x00\x00"
                               "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 1, 2), }" SP32 SP16 SP4 " \n"
                               "\x00\x3c"
                               "\x00\xc0"
                               "\x00\x38"
                               "\xff\x7b";
/* np.save(f, np.array(200, np.uint8)): rank 0 gets no growth spaces */
static const char k_v1_u8[] = "\x93NUMPY\x01\x00\x76\x00"
                              "{'descr': '|u1', 'fortran_order': False, 'shape': (), }" SP32 SP16 SP8 SP4 SP2 "\n"
                              "\xc8";

/* ---- file helpers ---- */

static void put_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *get_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    assert_true(len >= 0);
    rewind(f);
    unsigned char *p = malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return p;
}

/* A .npy image: magic, version, little-endian header length (u16 for 1.x, u32 otherwise), the
 * header text as given (no padding added) and ndata zero bytes. Caller frees. */
static unsigned char *npy_image(unsigned major, unsigned minor, const char *header, size_t ndata, size_t *n)
{
    size_t hl = strlen(header), pre = major == 1 ? 10 : 12;
    unsigned char *p = calloc(pre + hl + ndata + 1, 1);
    assert_non_null(p);
    memcpy(p, "\x93NUMPY", 6);
    p[6] = (unsigned char)major;
    p[7] = (unsigned char)minor;
    for (size_t i = 0; i < pre - 8; i++) p[8 + i] = (unsigned char)(hl >> (8 * i));
    memcpy(p + pre, header, hl);
    *n = pre + hl + ndata;
    return p;
}

/* Reads path expecting failure with `status`; checks the message and the cleared output. */
static void expect_failure(const char *path, baatt_status status, const char *needle)
{
    baatt_npy a;
    char msg[512];
    memset(&a, 0x5a, sizeof a); /* garbage in: the reader must clear it */
    baatt_status s = baatt_npy_read(path, &a, msg, sizeof msg);
    if (s != status || !strstr(msg, needle))
        fprintf(stderr, "[ mismatch ] %s: got %d \"%s\", want %d containing \"%s\"\n", path, s, msg, status, needle);
    assert_int_equal(s, status);
    assert_non_null(strstr(msg, needle));
    assert_non_null(strstr(msg, path));
    assert_null(strchr(msg, '\n'));
    assert_null(a.data);
    assert_int_equal(a.count, 0);
    baatt_npy_free(&a);
}

/* Writes header + ndata zero bytes as a version major.minor file and expects failure. */
static void expect_bad_header(unsigned major, unsigned minor, const char *header, size_t ndata, const char *needle)
{
    char path[256];
    size_t n;
    unsigned char *img = npy_image(major, minor, header, ndata, &n);
    th_tmp_path(path, sizeof path, "bad.npy");
    put_file(path, img, n);
    free(img);
    expect_failure(path, BAATT_ERROR_FILE_FORMAT, needle);
    remove(path);
}

/* Reads an image expecting success. */
static void read_image(const void *img, size_t n, baatt_npy *a)
{
    char path[256], msg[512];
    th_tmp_path(path, sizeof path, "good.npy");
    put_file(path, img, n);
    baatt_status s = baatt_npy_read(path, a, msg, sizeof msg);
    if (s) fprintf(stderr, "[ error    ] %s\n", msg);
    assert_int_equal(s, BAATT_OK);
    assert_string_equal(msg, "");
    assert_non_null(a->data);
    remove(path);
}

/* ---- round trips ---- */

static void round_trip(baatt_npy_dtype dt, uint32_t rank, const uint64_t *shape, uint64_t *rng)
{
    char path[256], msg[512];
    size_t isz = baatt_npy_dtype_size(dt), count = 1;
    for (uint32_t i = 0; i < rank; i++) count *= shape[i];
    unsigned char *data = malloc(count * isz + 1);
    assert_non_null(data);
    for (size_t i = 0; i < count * isz; i++) data[i] = (unsigned char)th_next(rng);
    th_tmp_path(path, sizeof path, "rt.npy");
    assert_int_equal(baatt_npy_write(path, dt, rank, shape, data, msg, sizeof msg), BAATT_OK);

    /* The layout NumPy writes: version 1.0, data at a multiple of 64, header ends in '\n'. */
    size_t n;
    unsigned char *raw = get_file(path, &n);
    size_t off = 10 + (size_t)(raw[8] | raw[9] << 8);
    assert_memory_equal(raw, "\x93NUMPY\x01\x00", 8);
    assert_int_equal(off % 64, 0);
    assert_int_equal(raw[off - 1], '\n');
    assert_int_equal(n, off + count * isz);
    free(raw);

    baatt_npy a;
    assert_int_equal(baatt_npy_read(path, &a, msg, sizeof msg), BAATT_OK);
    assert_int_equal(a.dtype, dt);
    assert_int_equal(a.rank, rank);
    assert_int_equal(a.count, count);
    for (uint32_t i = 0; i < rank; i++) assert_int_equal(a.shape[i], shape[i]);
    assert_non_null(a.data); /* even for count 0: a 1-byte allocation */
    if (count) assert_memory_equal(a.data, data, count * isz);
    baatt_npy_free(&a);
    assert_null(a.data);
    free(data);
    remove(path);
}

static void test_round_trips(void **state)
{
    (void)state;
    uint64_t rng = th_seed();
    static const uint64_t s1[] = {7}, s2[] = {3, 5}, s4[] = {2, 1, 3, 2}, s0[] = {4, 0, 3},
                          s8[] = {1, 2, 1, 2, 1, 2, 1, 3};
    static const struct {
        uint32_t rank;
        const uint64_t *shape;
    } shapes[] = {
        {0, NULL}, {1, s1}, {2, s2}, {4, s4}, {3, s0}, {8, s8},
    };
    for (int dt = BAATT_NPY_F32; dt <= BAATT_NPY_U8; dt++)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            round_trip((baatt_npy_dtype)dt, shapes[i].rank, shapes[i].shape, &rng);
}

/* Large first dimensions: the growth padding shrinks, the alignment must still hold. */
static void test_alignment_all_header_lengths(void **state)
{
    (void)state;
    uint64_t rng = th_seed();
    uint64_t shape[2] = {1, 0};
    for (int digits = 1; digits <= 19; digits++, shape[0] *= 10) round_trip(BAATT_NPY_U8, 2, shape, &rng);
    for (uint64_t len = 0; len < 70; len++) {
        uint64_t s[3] = {1, len, 1};
        round_trip(BAATT_NPY_F16, 3, s, &rng);
    }
}

/* ---- byte-exact NumPy files ---- */

static void test_writer_matches_numpy(void **state)
{
    (void)state;
    char path[256], msg[512];
    size_t n;
    th_tmp_path(path, sizeof path, "exact.npy");
    static const uint64_t shape[] = {2, 3};
    assert_int_equal(baatt_npy_write(path, BAATT_NPY_F32, 2, shape, k_v1_f32 + 128, msg, sizeof msg), BAATT_OK);
    unsigned char *raw = get_file(path, &n);
    assert_int_equal(n, sizeof k_v1_f32 - 1);
    assert_memory_equal(raw, k_v1_f32, n);
    free(raw);
    assert_int_equal(baatt_npy_write(path, BAATT_NPY_U8, 0, NULL, k_v1_u8 + 128, msg, sizeof msg), BAATT_OK);
    raw = get_file(path, &n);
    assert_int_equal(n, sizeof k_v1_u8 - 1);
    assert_memory_equal(raw, k_v1_u8, n);
    free(raw);
    remove(path);
}

static void test_read_numpy_v1(void **state)
{
    (void)state;
    baatt_npy a;
    assert_int_equal(sizeof k_v1_f32 - 1, 152);
    read_image(k_v1_f32, sizeof k_v1_f32 - 1, &a);
    assert_int_equal(a.dtype, BAATT_NPY_F32);
    assert_int_equal(a.rank, 2);
    assert_int_equal(a.shape[0], 2);
    assert_int_equal(a.shape[1], 3);
    assert_int_equal(a.count, 6);
    const float *f = a.data;
    for (int i = 0; i < 6; i++) assert_true(f[i] == (float)i * 0.5f - 1.0f);
    baatt_npy_free(&a);

    assert_int_equal(sizeof k_v1_u8 - 1, 129);
    read_image(k_v1_u8, sizeof k_v1_u8 - 1, &a);
    assert_int_equal(a.dtype, BAATT_NPY_U8);
    assert_int_equal(a.rank, 0);
    assert_int_equal(a.count, 1);
    assert_int_equal(((const uint8_t *)a.data)[0], 200);
    baatt_npy_free(&a);
}

static void test_read_numpy_v2_v3(void **state)
{
    (void)state;
    baatt_npy a;
    assert_int_equal(sizeof k_v2_i32 - 1, 144);
    read_image(k_v2_i32, sizeof k_v2_i32 - 1, &a);
    assert_int_equal(a.dtype, BAATT_NPY_I32);
    assert_int_equal(a.rank, 1);
    assert_int_equal(a.shape[0], 4);
    const int32_t *i32 = a.data;
    assert_int_equal(i32[0], -2);
    assert_int_equal(i32[1], -1);
    assert_int_equal(i32[2], 0);
    assert_int_equal(i32[3], 2147483647);
    baatt_npy_free(&a);

    assert_int_equal(sizeof k_v3_f16 - 1, 136);
    read_image(k_v3_f16, sizeof k_v3_f16 - 1, &a);
    assert_int_equal(a.dtype, BAATT_NPY_F16);
    assert_int_equal(a.rank, 3);
    assert_int_equal(a.shape[0], 2);
    assert_int_equal(a.shape[1], 1);
    assert_int_equal(a.shape[2], 2);
    const uint16_t *h = a.data;
    assert_int_equal(h[0], 0x3c00); /* 1 */
    assert_int_equal(h[1], 0xc000); /* -2 */
    assert_int_equal(h[2], 0x3800); /* 0.5 */
    assert_int_equal(h[3], 0x7bff); /* 65504 */
    baatt_npy_free(&a);
}

/* Headers other writers (or older NumPy) produce: any key order, double quotes, odd whitespace,
 * no trailing comma, 16-byte or no alignment, '<u1', Python 2 'L' suffixes, trailing data. */
static void test_read_lenient_headers(void **state)
{
    (void)state;
    static const struct {
        unsigned major;
        const char *header;
        uint32_t rank;
        uint64_t count;
        size_t ndata;
    } ok[] = {
        {1, "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}", 2, 6, 24},
        {1, "{\"descr\":\"<f4\",\"fortran_order\":False,\"shape\":(3,)}\n", 1, 3, 12},
        {1, " {\n\t'descr' : '<i4' ,\n 'fortran_order' :False, 'shape' : ( 2 , 2 , ) , }  \r\n", 2, 4, 16},
        {1, "{'descr': '<u1', 'fortran_order': False, 'shape': (5,), }  \n", 1, 5, 5}, /* 16-aligned */
        {2, "{'descr': '|u1', 'fortran_order': False, 'shape': (2L, 3L), }\n", 2, 6, 6},
        {1, "{'descr': '<f2', 'fortran_order': False, 'shape': (0,), }\n", 1, 0, 0},
        {3, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }\n", 1, 1, 4 + 100}, /* trailing */
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t n;
        unsigned char *img = npy_image(ok[i].major, 0, ok[i].header, ok[i].ndata, &n);
        baatt_npy a;
        read_image(img, n, &a);
        assert_int_equal(a.rank, ok[i].rank);
        assert_int_equal(a.count, ok[i].count);
        baatt_npy_free(&a);
        free(img);
    }
}

/* ---- malformed files ---- */

#define F4_23 "'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), "

static void test_bad_prefix(void **state)
{
    (void)state;
    char path[256];
    th_tmp_path(path, sizeof path, "prefix.npy");
    static const struct {
        const char *bytes;
        size_t n;
        const char *needle;
    } cases[] = {
        {"", 0, "too short"},
        {"\x93NUMP", 5, "too short"},
        {"\x93NUMPZ\x01\x00\x10\x00{}", 12, "bad magic"},
        {"PK\x03\x04\x14\x00\x00\x00\x08\x00", 10, "bad magic"}, /* an .npz is a zip */
        {"\x93NUMPY\x04\x00\x10\x00", 10, "version 4.0"},
        {"\x93NUMPY\x01\x01\x10\x00", 10, "version 1.1"},
        {"\x93NUMPY\x00\x00\x10\x00", 10, "version 0.0"},
        {"\x93NUMPY\x01\x00\x10", 9, "truncated .npy header length"},
        {"\x93NUMPY\x02\x00\x10\x00\x00", 11, "truncated .npy header length"},
        {"\x93NUMPY\x01\x00\x76\x00{'descr'", 17, "runs past the end of the file"},
        {"\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14, "runs past the end of the file"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put_file(path, cases[i].bytes, cases[i].n);
        expect_failure(path, BAATT_ERROR_FILE_FORMAT, cases[i].needle);
    }
    remove(path);
}

/* A header over the 64 KiB cap in a file that really is that long. */
static void test_header_too_long(void **state)
{
    (void)state;
    size_t len = 70000;
    char *h = malloc(len + 1);
    assert_non_null(h);
    memset(h, ' ', len);
    h[len] = 0;
    memcpy(h, "{" F4_23 "}", strlen("{" F4_23 "}"));
    expect_bad_header(2, 0, h, 24, "exceeds the 65536-byte limit");
    free(h);
}

static void test_bad_headers(void **state)
{
    (void)state;
    static const struct {
        const char *header;
        size_t ndata;
        const char *needle;
    } cases[] = {
        /* semantics */
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24, "Fortran order"},
        {"{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24, "big-endian byte order (dtype '>f4')"},
        {"{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }", 8, "big-endian"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16, "dtype '<f8' is not supported"},
        {"{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 16, "dtype '<i8' is not supported"},
        {"{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", 16, "dtype '|O' is not supported"},
        {"{'descr': 'O', 'fortran_order': False, 'shape': (2,), }", 16, "dtype 'O' is not supported"},
        {"{'descr': '', 'fortran_order': False, 'shape': (2,), }", 16, "dtype '' is not supported"},
        {"{'descr': '<f4\x01\x02', 'fortran_order': False, 'shape': (2,), }", 16, "dtype '<f4?\?'"},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8, "structured dtypes"},
        /* keys */
        {"{'descr': '<f4', 'fortran_order': False, }", 24, "no 'shape' key"},
        {"{'fortran_order': False, 'shape': (2, 3), }", 24, "no 'descr' key"},
        {"{'descr': '<f4', 'shape': (2, 3), }", 24, "no 'fortran_order' key"},
        {"{}", 0, "no 'descr' key"},
        {"{" F4_23 "'extra': 1, }", 24, "unexpected key 'extra'"},
        {"{" F4_23 "'shape': (2, 3), }", 24, "duplicate key 'shape'"},
        /* shapes */
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }", 24, "negative dimension -3"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }", 24, "negative dimension -1"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 24, "too large"},
        {"{'descr': '<u1', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296), }", 0, "too large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775808,), }", 24, "too large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999999,), }", 24, "too large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2305843009213693952,), }", 24, "too large"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000000000), }", 24, "truncated .npy data"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 4, "more than 8 dimensions"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (6), }", 24, "not a tuple"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }", 24, "malformed"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, }", 24, "malformed"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (,), }", 24, "malformed"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3), }", 24, "malformed"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2.0, 3), }", 24, "malformed"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (0x10,), }", 24, "malformed"},
        /* data */
        {"{" F4_23 "}\n", 23, "truncated .npy data"},
        {"{" F4_23 "}\n", 0, "truncated .npy data"},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (), }", 3, "truncated .npy data"},
        /* garbled dicts */
        {"", 24, "malformed"},
        {"  \n", 24, "malformed"},
        {"not a dict", 24, "malformed"},
        {"{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3), }", 24, "malformed"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), ", 24, "malformed"},
        {"{'descr: '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, "malformed"},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (2, 3)}", 24, "malformed"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } trailing", 24, "after the dict"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }}", 24, "after the dict"},
        {"{'descr': '<f4', 'fortran_order': false, 'shape': (2, 3), }", 24, "True or False"},
        {"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2, 3), }", 24, "True or False"},
        {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }", 24, "True or False"},
        {"{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, "expected ':'"},
        {"{, 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, "malformed"},
        {"{'descr': '<f4',, 'fortran_order': False, 'shape': (2, 3), }", 24, "malformed"},
        {"{'descr': '<\\x66\\x34', 'fortran_order': False, 'shape': (2, 3), }", 24, "escape"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", 24, "end of the header"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }\x01", 24, "after the dict"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_bad_header(1, 0, cases[i].header, cases[i].ndata, cases[i].needle);
}

/* A NUL inside the header must not end parsing early (the header is not a C string). */
static void test_nul_in_header(void **state)
{
    (void)state;
    char path[256];
    unsigned char img[10 + 64 + 24] = {0};
    const char *h = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    memcpy(img, "\x93NUMPY\x01\x00\x40\x00", 10);
    memset(img + 10, ' ', 64);
    memcpy(img + 10, h, strlen(h));
    img[10 + 62] = 0; /* a NUL in the padding */
    img[10 + 63] = '\n';
    th_tmp_path(path, sizeof path, "nul.npy");
    put_file(path, img, sizeof img);
    expect_failure(path, BAATT_ERROR_FILE_FORMAT, "after the dict");
    img[10 + 62] = ' ';
    img[10 + 12] = 0; /* inside the descr string: "<\0""4" */
    put_file(path, img, sizeof img);
    expect_failure(path, BAATT_ERROR_FILE_FORMAT, "dtype '<?4' is not supported");
    remove(path);
}

/* Every proper prefix of a valid file fails cleanly (valgrind checks there is no over-read). */
static void test_every_truncation(void **state)
{
    (void)state;
    char path[256], msg[512];
    th_tmp_path(path, sizeof path, "trunc.npy");
    const char *files[] = {k_v1_f32, k_v2_i32, k_v3_f16, k_v1_u8};
    size_t sizes[] = {sizeof k_v1_f32 - 1, sizeof k_v2_i32 - 1, sizeof k_v3_f16 - 1, sizeof k_v1_u8 - 1};
    for (size_t f = 0; f < 4; f++)
        for (size_t n = 0; n < sizes[f]; n++) {
            baatt_npy a;
            put_file(path, files[f], n);
            assert_int_equal(baatt_npy_read(path, &a, msg, sizeof msg), BAATT_ERROR_FILE_FORMAT);
            assert_null(a.data);
        }
    remove(path);
}

/* Random byte mutations of a valid file: the reader either fails with FILE_FORMAT or returns
 * an array that fits in the bytes that were there. */
static void test_mutations(void **state)
{
    (void)state;
    static const char alphabet[] = "{}()[]',:- 0123456789TrueFalsdcrphob<>|fiu\n\"L\x00\xff";
    char path[256], msg[512];
    unsigned char img[sizeof k_v1_f32 - 1];
    uint64_t rng = th_seed();
    int accepted = 0;
    th_tmp_path(path, sizeof path, "mut.npy");
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(img, k_v1_f32, sizeof img);
        int edits = 1 + (int)(th_next(&rng) % 4);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)(th_next(&rng) % 80); /* magic, length and the dict */
            uint64_t r = th_next(&rng);
            img[at] = (r & 1) ? (unsigned char)(r >> 8) : (unsigned char)alphabet[(r >> 8) % (sizeof alphabet - 1)];
        }
        put_file(path, img, sizeof img);
        baatt_npy a;
        baatt_status s = baatt_npy_read(path, &a, msg, sizeof msg);
        if (s == BAATT_OK) {
            accepted++;
            assert_true(a.rank <= BAATT_NPY_MAX_RANK);
            assert_true(a.count * baatt_npy_dtype_size(a.dtype) <= sizeof img);
            assert_non_null(a.data);
        } else {
            assert_int_equal(s, BAATT_ERROR_FILE_FORMAT);
            assert_null(a.data);
            assert_null(strchr(msg, '\n'));
            assert_true(msg[0] != 0);
        }
        baatt_npy_free(&a);
    }
    fprintf(stderr, "[ info     ] mutations: %d of 3000 still read\n", accepted);
    remove(path);
}

/* ---- I/O and argument errors ---- */

static void test_io_errors(void **state)
{
    (void)state;
    char path[256], msg[512];
    th_tmp_path(path, sizeof path, "does-not-exist.npy");
    remove(path);
    expect_failure(path, BAATT_ERROR_IO, "cannot open");
    expect_failure("/", BAATT_ERROR_IO, "directory");
    /* A character device has no size: the reads themselves must catch the short file. */
    expect_failure("/dev/null", BAATT_ERROR_FILE_FORMAT, "too short");

    static const uint64_t shape[] = {4};
    static const float data[4] = {1, 2, 3, 4};
    assert_int_equal(baatt_npy_write("/nonexistent-dir/x.npy", BAATT_NPY_F32, 1, shape, data, msg, sizeof msg),
                     BAATT_ERROR_IO);
    assert_non_null(strstr(msg, "/nonexistent-dir/x.npy"));
    struct stat st;
    if (stat("/dev/full", &st) == 0) { /* the write fails (ENOSPC); the device must survive */
        assert_int_equal(baatt_npy_write("/dev/full", BAATT_NPY_F32, 1, shape, data, msg, sizeof msg), BAATT_ERROR_IO);
        assert_non_null(strstr(msg, "write failed"));
        assert_int_equal(stat("/dev/full", &st), 0);
    }
}

static void test_null_arguments(void **state)
{
    (void)state;
    char path[256], msg[512];
    baatt_npy a;
    static const uint64_t shape[] = {2, 2};
    static const float data[4] = {0};
    th_tmp_path(path, sizeof path, "args.npy");
    assert_int_equal(baatt_npy_read(NULL, &a, msg, sizeof msg), BAATT_ERROR_INVALID_ARGUMENT);
    assert_null(a.data);
    assert_int_equal(baatt_npy_read(path, NULL, msg, sizeof msg), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_npy_read(NULL, NULL, NULL, 0), BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_npy_write(NULL, BAATT_NPY_F32, 2, shape, data, msg, sizeof msg),
                     BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_npy_write(path, BAATT_NPY_F32, 2, NULL, data, msg, sizeof msg),
                     BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_npy_write(path, BAATT_NPY_F32, 2, shape, NULL, msg, sizeof msg),
                     BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_npy_write(path, (baatt_npy_dtype)7, 2, shape, data, msg, sizeof msg),
                     BAATT_ERROR_INVALID_ARGUMENT);
    assert_int_equal(baatt_npy_write(path, BAATT_NPY_F32, 9, shape, data, NULL, 0), BAATT_ERROR_INVALID_ARGUMENT);
    static const uint64_t huge[] = {1ull << 32, 1ull << 32};
    assert_int_equal(baatt_npy_write(path, BAATT_NPY_F32, 2, huge, data, msg, sizeof msg),
                     BAATT_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "too large"));
    assert_int_equal(access(path, F_OK), -1); /* nothing was created */
    /* count 0 needs no data */
    static const uint64_t empty[] = {3, 0};
    assert_int_equal(baatt_npy_write(path, BAATT_NPY_I32, 2, empty, NULL, msg, sizeof msg), BAATT_OK);
    assert_int_equal(baatt_npy_read(path, &a, msg, sizeof msg), BAATT_OK);
    assert_int_equal(a.count, 0);
    baatt_npy_free(&a);
    remove(path);
    baatt_npy_free(NULL);
}

/* A small message buffer is truncated, never overrun. */
static void test_small_message_buffer(void **state)
{
    (void)state;
    struct {
        char msg[8];
        char guard[8];
    } b;
    memset(&b, 'G', sizeof b);
    baatt_npy a;
    assert_int_equal(baatt_npy_read("/nonexistent-dir/x.npy", &a, b.msg, sizeof b.msg), BAATT_ERROR_IO);
    assert_int_equal(strlen(b.msg), 7);
    assert_memory_equal(b.guard, "GGGGGGGG", 8);
    assert_int_equal(baatt_npy_read("/nonexistent-dir/x.npy", &a, NULL, 100), BAATT_ERROR_IO);
}

/* ---- pipes: no file size to check a shape against ---- */

/* Reads img through a pipe (/dev/fd/N) that a child process fills; returns the reader's status. */
static baatt_status read_pipe(const void *img, size_t n, baatt_npy *a, char *msg, size_t msg_size)
{
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* the writer: all of img, then EOF (the reader may stop early: EPIPE) */
        close(fd[0]);
        for (size_t off = 0; off < n;) {
            ssize_t w = write(fd[1], (const char *)img + off, n - off);
            if (w <= 0) break;
            off += (size_t)w;
        }
        _exit(0);
    }
    close(fd[1]);
    char path[64];
    snprintf(path, sizeof path, "/dev/fd/%d", fd[0]);
    baatt_status s = baatt_npy_read(path, a, msg, msg_size);
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    return s;
}

/* A 3 MiB array through a pipe: the reader's buffer grows in steps and the data arrives intact. */
static void test_pipe_large(void **state)
{
    (void)state;
    const uint64_t count = 3u << 18; /* float32: 3 MiB, past the first 1 MiB step */
    char header[128];
    snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (%llu,), }\n",
             (unsigned long long)count);
    size_t n;
    unsigned char *img = npy_image(1, 0, header, count * 4, &n);
    for (uint64_t i = 0; i < count; i++) {
        float x = (float)i;
        memcpy(img + n - count * 4 + i * 4, &x, 4);
    }
    baatt_npy a;
    char msg[512];
    assert_int_equal(read_pipe(img, n, &a, msg, sizeof msg), BAATT_OK);
    assert_int_equal(a.count, count);
    assert_memory_equal(a.data, img + n - count * 4, count * 4);
    baatt_npy_free(&a);
    free(img);
}

/* 69 bytes that declare 4 GiB (the case), and a shape of 2^52 bytes: each fails as
 * truncated after allocating about what arrived; a reader that trusted the header would ask for
 * the whole size first (out of memory, or an abort under ASan). */
static void test_pipe_huge_declared(void **state)
{
    (void)state;
    const char *headers[] = {"{'descr': '<f4', 'fortran_order': False, 'shape': (1073741824,), }",
                             "{'descr': '<f4', 'fortran_order': False, 'shape': (1125899906842624,), }"};
    for (int i = 0; i < 2; i++) {
        size_t n;
        unsigned char *img = npy_image(1, 0, headers[i], 0, &n);
        baatt_npy a;
        char msg[512];
        memset(&a, 0x5a, sizeof a);
        baatt_status s = read_pipe(img, n, &a, msg, sizeof msg);
        if (s != BAATT_ERROR_FILE_FORMAT) fprintf(stderr, "[ mismatch ] %d: %s\n", s, msg);
        assert_int_equal(s, BAATT_ERROR_FILE_FORMAT);
        assert_non_null(strstr(msg, "truncated .npy data"));
        assert_null(a.data);
        free(img);
    }
}

static void test_dtype_size(void **state)
{
    (void)state;
    assert_int_equal(baatt_npy_dtype_size(BAATT_NPY_F32), 4);
    assert_int_equal(baatt_npy_dtype_size(BAATT_NPY_F16), 2);
    assert_int_equal(baatt_npy_dtype_size(BAATT_NPY_I32), 4);
    assert_int_equal(baatt_npy_dtype_size(BAATT_NPY_U8), 1);
    assert_int_equal(baatt_npy_dtype_size((baatt_npy_dtype)42), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_alignment_all_header_lengths),
        cmocka_unit_test(test_writer_matches_numpy),
        cmocka_unit_test(test_read_numpy_v1),
        cmocka_unit_test(test_read_numpy_v2_v3),
        cmocka_unit_test(test_read_lenient_headers),
        cmocka_unit_test(test_bad_prefix),
        cmocka_unit_test(test_header_too_long),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_nul_in_header),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_null_arguments),
        cmocka_unit_test(test_small_message_buffer),
        cmocka_unit_test(test_dtype_size),
        cmocka_unit_test(test_pipe_large),
        cmocka_unit_test(test_pipe_huge_declared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
