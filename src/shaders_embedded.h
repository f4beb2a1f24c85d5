/* The SPIR-V modules compiled at build time (see cmake/shaders.cmake). */
#ifndef BAATT_SHADERS_EMBEDDED_H
#define BAATT_SHADERS_EMBEDDED_H
#include <stddef.h>
#include <stdint.h>
typedef struct baatt_embedded_shader {
    const char *name; /* variant name, e.g. "attention_f16" */
    const uint32_t *code;
    const size_t *size; /* bytes */
} baatt_embedded_shader;
extern const baatt_embedded_shader baatt_embedded_shaders[]; /* ends with a NULL name */
#endif
