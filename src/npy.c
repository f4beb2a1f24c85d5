/* NumPy .npy files, format versions 1.0, 2.0 and 3.0: little-endian float32, float16, int32 and
 * uint8 arrays in C order, any rank up to BAATT_NPY_MAX_RANK.
 *
 * The reader is fed user files, so every byte is treated as hostile:
 *  - the header dict is parsed by a small strict parser over (pointer, end), never as a C string,
 *    so NUL bytes or a missing terminator cannot make it read past the buffer;
 *  - exactly the keys 'descr', 'fortran_order' and 'shape' must appear, once each, in any order
 *    (what NumPy's own reader demands);
 *  - the element count and byte size are computed with checked multiplication and compared with
 *    the file size *before* anything is allocated, so a tiny file cannot ask for a huge buffer;
 *  - from a pipe (no size to compare with), the data buffer grows only as bytes arrive;
 *  - a file shorter than its header or data fails; trailing bytes after the data are ignored
 *    (NumPy reads only the first count elements, too).
 * The writer produces exactly what numpy.save writes for the same array (version 1.0, the spare
 * "growth" spaces NumPy leaves after the dict, data aligned to 64 bytes).
 * Messages are single lines that start with the path; nothing here prints. */
#define _POSIX_C_SOURCE 200809L /* fileno, fstat under a strict -std=c11 */
#include "baatt.h"
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64         /* numpy.lib.format.ARRAY_ALIGN */
#define NPY_GROWTH_DIGITS 21 /* numpy.lib.format.GROWTH_AXIS_MAX_DIGITS */
/* NumPy itself refuses headers over 10000 characters by default; ours never exceed ~300, and
 * no dtype we support needs more. The cap bounds the allocation for a v2/v3 u32 length. */
#define NPY_MAX_HEADER 65536u
#define NPY_MAX_DIM 0x7fffffffffffffffull /* NumPy dimensions are signed 64-bit (npy_intp) */

#define fail baatt_msgf /* message into the caller's buffer, status returned */

/* The data bytes are copied as they are, so a big-endian host would silently byte-swap
 * everything: refuse instead. The compiler folds this to a constant. */
static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

size_t baatt_npy_dtype_size(baatt_npy_dtype dtype)
{
    switch (dtype) {
    case BAATT_NPY_F32: return 4;
    case BAATT_NPY_F16: return 2;
    case BAATT_NPY_I32: return 4;
    case BAATT_NPY_U8: return 1;
    }
    return 0;
}

/* The descr numpy.save writes for each dtype (NumPy spells uint8 '|u1': no byte order). */
static const char *write_descr(baatt_npy_dtype dtype)
{
    switch (dtype) {
    case BAATT_NPY_F32: return "<f4";
    case BAATT_NPY_F16: return "<f2";
    case BAATT_NPY_I32: return "<i4";
    case BAATT_NPY_U8: return "|u1";
    }
    return NULL;
}

void baatt_npy_free(baatt_npy *npy)
{
    if (!npy) return;
    free(npy->data);
    memset(npy, 0, sizeof *npy);
}

/* count = product of shape (1 for rank 0, 0 if any dimension is 0) and bytes = count * itemsize,
 * both checked. As NumPy does, the non-zero dimensions must not overflow even when another
 * dimension is 0, so that no dimension is absurd. Returns 0 when everything fits. */
static int shape_size(const uint64_t *shape, uint32_t rank, size_t itemsize, uint64_t *count, uint64_t *bytes)
{
    uint64_t nz = itemsize; /* bytes of the non-zero dimensions */
    int zero = 0;
    for (uint32_t i = 0; i < rank; i++) {
        if (shape[i] > NPY_MAX_DIM) return -1;
        if (shape[i] == 0) {
            zero = 1;
            continue;
        }
        if (nz > UINT64_MAX / shape[i]) return -1;
        nz *= shape[i];
    }
    if (nz > NPY_MAX_DIM || nz > SIZE_MAX) return -1;
    *bytes = zero ? 0 : nz;
    *count = *bytes / itemsize;
    return 0;
}

/* "(2, 3)" for messages; shape values are already validated numbers. */
static const char *shape_text(char *buf, size_t n, const uint64_t *shape, uint32_t rank)
{
    size_t len = (size_t)snprintf(buf, n, "(");
    for (uint32_t i = 0; i < rank && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, i ? ", %llu" : "%llu", (unsigned long long)shape[i]);
    if (len < n) snprintf(buf + len, n - len, rank == 1 ? ",)" : ")");
    return buf;
}

/* ---------------------------------------------------------------------------------------------
 * Header dict parser. Grammar (a subset of the Python literals ast.literal_eval accepts):
 *   header := ws '{' ws [entry (ws ',' ws entry)* ws [',']] ws '}' ws      (ws: space \t \r \n)
 *   entry  := string ws ':' ws value      string := '...' | "..." without escapes or newlines
 *   'descr' -> string, 'fortran_order' -> True | False,
 *   'shape' -> '(' ws ')' | '(' dim ws ',' ws ')' | '(' dim (ws ',' ws dim)+ ws [','] ws ')'
 *   dim    := digits, plus an 'L' suffix in 1.0/2.0 files (Python 2 longs; NumPy filters it too)
 * ------------------------------------------------------------------------------------------- */
typedef struct npy_header {
    const char *start, *p, *end; /* the header text and the cursor */
    unsigned major;
    const char *descr; /* points into the text; not NUL-terminated */
    size_t descr_len;
    int seen_descr, seen_fortran, seen_shape;
    int fortran;
    baatt_npy_dtype dtype; /* resolved from descr by parse_dict */
    uint32_t rank;
    uint64_t shape[BAATT_NPY_MAX_RANK];
    char why[200]; /* the problem, when a step returns -1 */
} npy_header;

static int bad(npy_header *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int bad(npy_header *h, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->why, sizeof h->why, fmt, ap);
    va_end(ap);
    return -1;
}

/* Copies untrusted text for a message: printable ASCII only (the message stays one line),
 * truncated with "..." when long. */
static const char *printable(char *dst, size_t n, const char *s, size_t len)
{
    size_t keep = len < n ? len : (n > 4 ? n - 4 : 0); /* n >= 1: callers pass arrays */
    for (size_t i = 0; i < keep; i++) dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (keep < len && n > 4) {
        memcpy(dst + keep, "...", 3);
        keep += 3;
    }
    dst[keep] = 0;
    return dst;
}

static size_t offset(const npy_header *h) { return (size_t)(h->p - h->start); }

static void skip_ws(npy_header *h)
{
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\r' || *h->p == '\n')) h->p++;
}

/* Consumes c or fails naming what was found instead. */
static int expect(npy_header *h, char c, const char *where)
{
    if (h->p < h->end && *h->p == c) {
        h->p++;
        return 0;
    }
    if (h->p >= h->end) return bad(h, "malformed .npy header: expected '%c' %s, found the end of the header", c, where);
    char got[8];
    return bad(h, "malformed .npy header: expected '%c' %s at offset %zu, found '%s'", c, where, offset(h),
               printable(got, sizeof got, h->p, 1));
}

static int parse_string(npy_header *h, const char **s, size_t *len)
{
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
        return bad(h, "malformed .npy header: expected a quoted string at offset %zu", offset(h));
    char quote = *h->p++;
    const char *begin = h->p;
    while (h->p < h->end && *h->p != quote) {
        /* No value we accept needs escapes; refusing them keeps the parser trivially safe. */
        if (*h->p == '\\' || *h->p == '\n')
            return bad(h, "malformed .npy header: escape or newline inside a string at offset %zu", offset(h));
        h->p++;
    }
    if (h->p >= h->end)
        return bad(h, "malformed .npy header: unterminated string at offset %zu", (size_t)(begin - 1 - h->start));
    *s = begin;
    *len = (size_t)(h->p - begin);
    h->p++;
    return 0;
}

static int is_ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int parse_word(npy_header *h, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(h->end - h->p) < n || memcmp(h->p, word, n)) return 0;
    if ((size_t)(h->end - h->p) > n && is_ident_char(h->p[n])) return 0;
    h->p += n;
    return 1;
}

static int parse_descr(npy_header *h)
{
    if (h->p < h->end && *h->p == '[') return bad(h, "structured dtypes (a list 'descr') are not supported");
    return parse_string(h, &h->descr, &h->descr_len);
}

static int parse_fortran(npy_header *h)
{
    if (parse_word(h, "True")) {
        h->fortran = 1;
        return 0;
    }
    if (parse_word(h, "False")) {
        h->fortran = 0;
        return 0;
    }
    return bad(h, "malformed .npy header: 'fortran_order' must be True or False (offset %zu)", offset(h));
}

static int parse_dim(npy_header *h, uint64_t *dim)
{
    const char *begin = h->p;
    char text[32];
    if (h->p < h->end && *h->p == '-') {
        h->p++;
        while (h->p < h->end && *h->p >= '0' && *h->p <= '9') h->p++;
        return bad(h, "negative dimension %s in 'shape'", printable(text, sizeof text, begin, (size_t)(h->p - begin)));
    }
    if (h->p >= h->end || *h->p < '0' || *h->p > '9')
        return bad(h, "malformed .npy header: expected a dimension in 'shape' at offset %zu", offset(h));
    uint64_t v = 0;
    int over = 0;
    for (; h->p < h->end && *h->p >= '0' && *h->p <= '9'; h->p++) {
        unsigned d = (unsigned)(*h->p - '0');
        if (v > (NPY_MAX_DIM - d) / 10) over = 1; /* keep scanning to name the whole number */
        else v = v * 10 + d;
    }
    if (over)
        return bad(h, "dimension %s in 'shape' is too large (over 2^63-1)",
                   printable(text, sizeof text, begin, (size_t)(h->p - begin)));
    if (h->major <= 2 && h->p < h->end && (*h->p == 'L' || *h->p == 'l')) h->p++;
    *dim = v;
    return 0;
}

/* After '(': dims separated by commas; one dim needs a trailing comma, as in Python. */
static int parse_shape(npy_header *h)
{
    if (expect(h, '(', "to open the 'shape' tuple")) return -1;
    h->rank = 0;
    skip_ws(h);
    int comma = 0;
    while (h->p < h->end && *h->p != ')') {
        if (h->rank == BAATT_NPY_MAX_RANK) return bad(h, "'shape' has more than %d dimensions", BAATT_NPY_MAX_RANK);
        if (parse_dim(h, &h->shape[h->rank++])) return -1;
        skip_ws(h);
        comma = h->p < h->end && *h->p == ',';
        if (!comma) break;
        h->p++;
        skip_ws(h);
    }
    if (expect(h, ')', "to close the 'shape' tuple")) return -1;
    if (h->rank == 1 && !comma)
        return bad(h, "malformed .npy header: 'shape' (%llu) is not a tuple (a 1-tuple needs a trailing comma)",
                   (unsigned long long)h->shape[0]);
    return 0;
}

/* One "key: value" entry; each of the three keys exactly once. */
static int parse_entry(npy_header *h)
{
    const char *key = NULL;
    size_t len = 0;
    char text[40];
    if (parse_string(h, &key, &len)) return -1;
    skip_ws(h);
    if (expect(h, ':', "after a key")) return -1;
    skip_ws(h);
    int *seen;
    int (*value)(npy_header *);
    if (len == 5 && !memcmp(key, "descr", 5)) {
        seen = &h->seen_descr;
        value = parse_descr;
    } else if (len == 13 && !memcmp(key, "fortran_order", 13)) {
        seen = &h->seen_fortran;
        value = parse_fortran;
    } else if (len == 5 && !memcmp(key, "shape", 5)) {
        seen = &h->seen_shape;
        value = parse_shape;
    } else return bad(h, "unexpected key '%s' in the .npy header", printable(text, sizeof text, key, len));
    if (*seen) return bad(h, "duplicate key '%s' in the .npy header", printable(text, sizeof text, key, len));
    *seen = 1;
    return value(h);
}

/* The descr string to a dtype, naming unsupported ones (and big-endian ones specifically). */
static int resolve_dtype(npy_header *h)
{
    static const struct {
        const char *descr;
        baatt_npy_dtype dtype;
    } known[] = {
        {"<f4", BAATT_NPY_F32}, {"<f2", BAATT_NPY_F16}, {"<i4", BAATT_NPY_I32},
        {"|u1", BAATT_NPY_U8},  {"<u1", BAATT_NPY_U8},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (h->descr_len == 3 && !memcmp(h->descr, known[i].descr, 3)) {
            h->dtype = known[i].dtype;
            return 0;
        }
    char text[24];
    printable(text, sizeof text, h->descr, h->descr_len);
    if (h->descr_len == 3 && h->descr[0] == '>' && h->descr[1] && strchr("fiu", h->descr[1]))
        return bad(h, "big-endian byte order (dtype '%s') is not supported; save as little-endian ('<')", text);
    return bad(h, "dtype '%s' is not supported (float32 '<f4', float16 '<f2', int32 '<i4', uint8 '|u1')", text);
}

static int parse_dict(npy_header *h)
{
    skip_ws(h);
    if (expect(h, '{', "to open the header dict")) return -1;
    for (;;) {
        skip_ws(h);
        if (h->p < h->end && *h->p == '}') break;
        if (parse_entry(h)) return -1;
        skip_ws(h);
        if (h->p < h->end && *h->p == ',') {
            h->p++;
            continue;
        }
        if (h->p < h->end && *h->p == '}') break;
        return expect(h, '}', "or ',' after a value"); /* fails, naming what is there */
    }
    h->p++;
    skip_ws(h);
    if (h->p < h->end) return bad(h, "malformed .npy header: unexpected text after the dict at offset %zu", offset(h));
    if (!h->seen_descr) return bad(h, "the .npy header has no 'descr' key");
    if (!h->seen_fortran) return bad(h, "the .npy header has no 'fortran_order' key");
    if (!h->seen_shape) return bad(h, "the .npy header has no 'shape' key");
    return resolve_dtype(h); /* now, while descr still points into the text */
}

/* ---------------------------------------------------------------------------------------------
 * Reading.
 * ------------------------------------------------------------------------------------------- */

/* 0: got n bytes; 1: the file ended first; -1: a read error. */
static int read_exact(FILE *f, void *buf, size_t n)
{
    if (n == 0 || fread(buf, 1, n, f) == n) return 0;
    return ferror(f) ? -1 : 1;
}

typedef struct npy_file {
    FILE *f;
    const char *path;
    int size_known; /* a regular file: its size bounds every length before we allocate */
    uint64_t size;
    unsigned major;
    uint64_t data_offset;
} npy_file;

/* Magic, version and header length. */
static baatt_status read_prefix(npy_file *nf, uint32_t *hlen, char *msg, size_t n)
{
    unsigned char pre[12];
    int r = read_exact(nf->f, pre, 8);
    if (r < 0) return fail(msg, n, BAATT_ERROR_IO, "%s: read failed: %s", nf->path, strerror(errno));
    if (r > 0)
        return fail(msg, n, BAATT_ERROR_FILE_FORMAT, "%s: too short to be a .npy file (no complete magic and version)",
                    nf->path);
    if (memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN))
        return fail(msg, n, BAATT_ERROR_FILE_FORMAT, "%s: not a .npy file (bad magic bytes)", nf->path);
    nf->major = pre[6];
    if (pre[6] < 1 || pre[6] > 3 || pre[7] != 0)
        return fail(msg, n, BAATT_ERROR_FILE_FORMAT,
                    "%s: unsupported .npy format version %u.%u (1.0, 2.0 and 3.0 are read)", nf->path, pre[6], pre[7]);
    size_t lenbytes = nf->major == 1 ? 2 : 4; /* u16 in 1.0, u32 in 2.0 and 3.0, little-endian */
    r = read_exact(nf->f, pre + 8, lenbytes);
    if (r < 0) return fail(msg, n, BAATT_ERROR_IO, "%s: read failed: %s", nf->path, strerror(errno));
    if (r > 0) return fail(msg, n, BAATT_ERROR_FILE_FORMAT, "%s: truncated .npy header length", nf->path);
    *hlen = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
    if (lenbytes == 4) *hlen |= (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
    nf->data_offset = 8 + lenbytes + (uint64_t)*hlen;
    if (nf->size_known && nf->data_offset > nf->size)
        return fail(msg, n, BAATT_ERROR_FILE_FORMAT,
                    "%s: truncated .npy header: length %u runs past the end of the "
                    "file (%llu bytes)",
                    nf->path, *hlen, (unsigned long long)nf->size);
    if (*hlen > NPY_MAX_HEADER)
        return fail(msg, n, BAATT_ERROR_FILE_FORMAT, "%s: .npy header length %u exceeds the %u-byte limit", nf->path,
                    *hlen, NPY_MAX_HEADER);
    return BAATT_OK;
}

/* Reads and parses the header text into h. */
static baatt_status read_header(npy_file *nf, npy_header *h, char *msg, size_t n)
{
    uint32_t hlen = 0;
    baatt_status s = read_prefix(nf, &hlen, msg, n);
    if (s) return s;
    char *text = malloc(hlen ? hlen : 1);
    if (!text) return fail(msg, n, BAATT_ERROR_OUT_OF_HOST_MEMORY, "%s: out of memory for the header", nf->path);
    int r = read_exact(nf->f, text, hlen);
    if (r < 0) s = fail(msg, n, BAATT_ERROR_IO, "%s: read failed: %s", nf->path, strerror(errno));
    else if (r > 0) s = fail(msg, n, BAATT_ERROR_FILE_FORMAT, "%s: truncated .npy header", nf->path);
    if (!s) {
        memset(h, 0, sizeof *h);
        h->start = h->p = text;
        h->end = text + hlen;
        h->major = nf->major;
        if (parse_dict(h)) s = fail(msg, n, BAATT_ERROR_FILE_FORMAT, "%s: %s", nf->path, h->why);
    }
    h->descr = NULL; /* it pointed into text */
    free(text);
    return s;
}

/* Checks the header's meaning and sizes; fills out's metadata (not data). */
static baatt_status check_header(npy_file *nf, npy_header *h, baatt_npy *out, char *msg, size_t n)
{
    char dims[8 * 22 + 4];
    out->dtype = h->dtype;
    if (h->fortran)
        return fail(msg, n, BAATT_ERROR_FILE_FORMAT,
                    "%s: Fortran order (fortran_order: True) is not supported; "
                    "save a C-contiguous array",
                    nf->path);
    out->rank = h->rank;
    memcpy(out->shape, h->shape, sizeof out->shape);
    uint64_t bytes = 0;
    if (shape_size(h->shape, h->rank, baatt_npy_dtype_size(out->dtype), &out->count, &bytes))
        return fail(msg, n, BAATT_ERROR_FILE_FORMAT, "%s: shape %s is too large (its byte size overflows)", nf->path,
                    shape_text(dims, sizeof dims, h->shape, h->rank));
    if (nf->size_known && bytes > nf->size - nf->data_offset)
        return fail(msg, n, BAATT_ERROR_FILE_FORMAT,
                    "%s: truncated .npy data: shape %s needs %llu bytes, the file "
                    "has %llu after the header",
                    nf->path, shape_text(dims, sizeof dims, h->shape, h->rank), (unsigned long long)bytes,
                    (unsigned long long)(nf->size - nf->data_offset));
    return BAATT_OK;
}

/* Without a known size (a pipe), the buffer grows with what arrives, at most doubling, so a tiny
 * stream that declares a huge shape fails as truncated after allocating about what it sent. */
#define NPY_PIPE_CHUNK (1u << 20)

static baatt_status read_data(npy_file *nf, baatt_npy *out, char *msg, size_t n)
{
    size_t bytes = (size_t)out->count * baatt_npy_dtype_size(out->dtype), have = 0;
    size_t cap = nf->size_known || bytes < NPY_PIPE_CHUNK ? bytes : NPY_PIPE_CHUNK;
    out->data = malloc(cap ? cap : 1); /* never NULL on success, even for count 0 */
    for (;;) {
        if (!out->data)
            return fail(msg, n, BAATT_ERROR_OUT_OF_HOST_MEMORY, "%s: out of memory for %zu bytes of data", nf->path,
                        cap);
        int r = read_exact(nf->f, (char *)out->data + have, cap - have);
        if (r < 0) return fail(msg, n, BAATT_ERROR_IO, "%s: read failed: %s", nf->path, strerror(errno));
        if (r > 0)
            return fail(msg, n, BAATT_ERROR_FILE_FORMAT,
                        "%s: truncated .npy data: the shape needs %zu bytes, the "
                        "stream ended within the first %zu",
                        nf->path, bytes, cap);
        if (cap == bytes) return BAATT_OK;
        have = cap;
        cap = bytes - cap > cap ? 2 * cap : bytes;
        void *grown = realloc(out->data, cap);
        if (!grown) free(out->data);
        out->data = grown;
    }
}

static baatt_status read_open_file(npy_file *nf, baatt_npy *out, char *msg, size_t n)
{
    struct stat st;
    if (fstat(fileno(nf->f), &st) == 0) {
        if (S_ISDIR(st.st_mode)) return fail(msg, n, BAATT_ERROR_IO, "%s: is a directory", nf->path);
        /* Pipes and devices have no size: then only the reads themselves detect truncation. */
        nf->size_known = S_ISREG(st.st_mode);
        nf->size = (uint64_t)st.st_size;
    }
    npy_header h;
    baatt_status s = read_header(nf, &h, msg, n);
    if (!s) s = check_header(nf, &h, out, msg, n);
    if (!s) s = read_data(nf, out, msg, n);
    return s;
}

baatt_status baatt_npy_read(const char *path, baatt_npy *out, char *msg, size_t n)
{
    if (msg && n) msg[0] = 0;
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out)
        return fail(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "baatt_npy_read: path and out must not be NULL");
    if (!host_is_little_endian())
        return fail(msg, n, BAATT_ERROR_FILE_FORMAT, "%s: .npy files are only supported on little-endian hosts", path);
    npy_file nf = {0};
    nf.path = path;
    nf.f = fopen(path, "rb");
    if (!nf.f) return fail(msg, n, BAATT_ERROR_IO, "%s: cannot open: %s", path, strerror(errno));
    baatt_status s = read_open_file(&nf, out, msg, n);
    fclose(nf.f);
    if (s) baatt_npy_free(out); /* the contract: out->data is NULL after any failure */
    return s;
}

/* ---------------------------------------------------------------------------------------------
 * Writing.
 * ------------------------------------------------------------------------------------------- */

/* The whole 1.0 header (magic through the final '\n') exactly as numpy.save writes it: the
 * repr of the dict with sorted keys, spare spaces so the first axis can grow to 21 digits in
 * place, then spaces and '\n' so the data starts at a multiple of 64. Returns its length. */
static size_t build_header(char *buf, size_t cap, baatt_npy_dtype dtype, uint32_t rank, const uint64_t *shape)
{
    char dims[8 * 22 + 4];
    int len = snprintf(buf + 10, cap - 10, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", write_descr(dtype),
                       shape_text(dims, sizeof dims, shape, rank));
    size_t hlen = (size_t)len;
    if (rank > 0) {
        int digits = snprintf(dims, sizeof dims, "%llu", (unsigned long long)shape[0]);
        for (int i = digits; i < NPY_GROWTH_DIGITS; i++) buf[10 + hlen++] = ' ';
    }
    /* NumPy's padlen is ALIGN - (10 + hlen + 1) % ALIGN: 1..64 spaces, never 0. */
    size_t pad = NPY_ALIGN - (10 + hlen + 1) % NPY_ALIGN;
    memset(buf + 10 + hlen, ' ', pad);
    hlen += pad;
    buf[10 + hlen++] = '\n';
    memcpy(buf, NPY_MAGIC, NPY_MAGIC_LEN);
    buf[6] = 1; /* version 1.0: a rank <= 8 header is always far below 65535 bytes */
    buf[7] = 0;
    buf[8] = (char)(hlen & 0xff);
    buf[9] = (char)(hlen >> 8);
    return 10 + hlen;
}

static baatt_status check_write_args(const char *path, baatt_npy_dtype dtype, uint32_t rank, const uint64_t *shape,
                                     const void *data, uint64_t *bytes, char *msg, size_t n)
{
    uint64_t count;
    char dims[8 * 22 + 4];
    if (!path) return fail(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "baatt_npy_write: path is NULL");
    if (!write_descr(dtype))
        return fail(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "%s: dtype %d is not a baatt_npy_dtype", path, (int)dtype);
    if (rank > BAATT_NPY_MAX_RANK)
        return fail(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "%s: rank %u exceeds %d", path, rank, BAATT_NPY_MAX_RANK);
    if (rank && !shape) return fail(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "%s: shape is NULL for rank %u", path, rank);
    if (shape_size(shape, rank, baatt_npy_dtype_size(dtype), &count, bytes))
        return fail(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "%s: shape %s is too large (its byte size overflows)", path,
                    shape_text(dims, sizeof dims, shape, rank));
    if (count && !data) return fail(msg, n, BAATT_ERROR_INVALID_ARGUMENT, "%s: data is NULL", path);
    if (!host_is_little_endian())
        return fail(msg, n, BAATT_ERROR_FILE_FORMAT, "%s: .npy files are only supported on little-endian hosts", path);
    return BAATT_OK;
}

baatt_status baatt_npy_write(const char *path, baatt_npy_dtype dtype, uint32_t rank, const uint64_t *shape,
                             const void *data, char *msg, size_t n)
{
    if (msg && n) msg[0] = 0;
    uint64_t bytes = 0;
    baatt_status s = check_write_args(path, dtype, rank, shape, data, &bytes, msg, n);
    if (s) return s;
    char head[512]; /* 10 + dict (< 240 for rank 8) + 20 growth + <= 64 padding + '\n' */
    size_t hlen = build_header(head, sizeof head, dtype, rank, shape);
    FILE *f = fopen(path, "wb");
    if (!f) return fail(msg, n, BAATT_ERROR_IO, "%s: cannot create: %s", path, strerror(errno));
    /* Only a regular file is removed after a failure: never unlink /dev/stdout or a FIFO. */
    struct stat st;
    int regular = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
    int ok = fwrite(head, 1, hlen, f) == hlen && (bytes == 0 || fwrite(data, 1, (size_t)bytes, f) == bytes);
    int err = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        err = errno;
    } /* a full disk may only show at the flush */
    if (ok) return BAATT_OK;
    if (regular) remove(path); /* never leave a truncated file that would later read as malformed */
    return fail(msg, n, BAATT_ERROR_IO, "%s: write failed: %s", path, strerror(err));
}
