/* The baatt command-line tool: one file per command, shared helpers in common.c. */
#ifndef BAATT_CLI_H
#define BAATT_CLI_H
#include <stdint.h>
#include <stdio.h>

#include "baatt.h"

int cmd_info(int argc, char **argv);
int cmd_attention(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_eval(int argc, char **argv);

/* Prints "baatt <cmd>: <message>" to stderr and returns 1 (the exit status of a failed command). */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Same, for a failed library call: status name plus the context's message when ctx != NULL. */
int cli_fail_status(const char *cmd, baatt_status s, const baatt_context *ctx, const char *what);

/* Option parsing: argv[i] is `name`; reads argv[i+1] into *out, advancing *i. Returns 0 on a bad
 * or missing value (after printing why). */
int cli_arg_str(const char *cmd, int argc, char **argv, int *i, const char **out);
int cli_arg_u32(const char *cmd, int argc, char **argv, int *i, unsigned *out);
int cli_arg_float(const char *cmd, int argc, char **argv, int *i, float *out);
/* --sort M: a baatt_sort_mode by its name (cli_sort_name). */
int cli_arg_sort(const char *cmd, int argc, char **argv, int *i, int *mode);
/* "off", "norm" or "auto" for a baatt_sort_mode; "?" for anything else. */
const char *cli_sort_name(int mode);
/* --covariance M: a baatt_covariance_mode by its name (cli_cov_name: off, on, auto). */
int cli_arg_cov(const char *cmd, int argc, char **argv, int *i, int *mode);
const char *cli_cov_name(int mode);

/* Opens a context on --device (index or name substring; NULL: default choice). */
int cli_open(const char *cmd, const char *device, baatt_context **ctx);
/* Destroys ctx; returns 1 (after saying so) when the validation layer (BAATT_VALIDATION=1)
 * reported anything on it, teardown included: a validated run with messages fails. */
int cli_close(const char *cmd, baatt_context *ctx);
/* Writes a one-line device description: "NVIDIA H100 80GB HBM3 (discrete GPU, NVIDIA 580.x)". */
void cli_device_line(const baatt_device_info *d, char *buf, size_t n);
const char *cli_device_type(baatt_device_type t);
/* Prints s as a JSON string literal (quoted, escaped). */
void cli_json_string(FILE *f, const char *s);

/* Refuses a non-finite input (unless allowed): "<name> (<path>): non-finite value nan at
 * [0, 1, 37, 5] (flat index 4869); ..." naming the first one. shape: rank dimensions. */
int cli_check_finite(const char *cmd, const char *name, const char *path, const void *data, baatt_dtype dt,
                     const uint64_t *shape, uint32_t rank);
/* Checks output paths before any GPU work: each must be creatable or writable (not a
 * directory), differ from every input and from every other output (as a file, not only as a
 * string). NULL entries are skipped. */
int cli_check_outputs(const char *cmd, const char *const *in, int nin, const char *const *out, int nout);

/* Random N(0,1) host tensor in dtype from the harness's generator (rng.h); caller frees. */
void *cli_random(uint64_t *state, baatt_dtype dt, size_t n);
/* Element i of a host tensor in dtype, as float. */
float cli_load(const void *p, baatt_dtype dt, size_t i);
/* Max over elements of |a - ref| / (1e-6 + max|ref|): error relative to the output's scale (a NaN
 * in a gives +inf). */
double cli_max_rel(const void *a, baatt_dtype dt, const float *ref, size_t n);
double cli_now_ms(void);
#endif
