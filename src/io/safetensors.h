// safetensors: read from a buffer or a file, write to a buffer or atomically to a file.
// Format: u64 little-endian header length L, then L bytes of JSON
//   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
// then the data section. Offsets are relative to the data section, must lie inside it, must not
// overlap, and must cover it exactly (as the reference implementation demands).
#ifndef BNL_SAFETENSORS_H
#define BNL_SAFETENSORS_H
#include "bnlab.h"
#include <stddef.h>
#include <stdint.h>

typedef enum bnl_dtype {
    BNL_DT_F32, BNL_DT_F16, BNL_DT_BF16, BNL_DT_F64,
    BNL_DT_I64, BNL_DT_I32, BNL_DT_I16, BNL_DT_I8, BNL_DT_U8, BNL_DT_BOOL,
} bnl_dtype;

#define BNL_ST_MAX_DIMS 8

typedef struct bnl_st_tensor {
    char *name;
    bnl_dtype dtype;
    int ndim;
    int64_t shape[BNL_ST_MAX_DIMS];
    size_t nelem;
    size_t nbytes;
    const uint8_t *data;   // points into the file's buffer
} bnl_st_tensor;

typedef struct bnl_st_file {
    bnl_st_tensor *tensors;   // in file order of their data offsets
    size_t count;
    char **meta_keys, **meta_values;
    size_t meta_count;
    uint8_t *owned;           // the buffer when the file was read from a path (else NULL: borrowed)
} bnl_st_file;

const char *bnl_dtype_name(bnl_dtype dt);
size_t bnl_dtype_size(bnl_dtype dt);

// Parses buf (borrowed: it must outlive *out). Every malformed input returns BNL_ERR_FORMAT with
// bnl_last_error() naming the problem (and the tensor, where there is one). Caller calls bnl_st_free.
bnl_status bnl_st_parse(bnl_st_file *out, const uint8_t *buf, size_t len);
// Reads the whole file, then parses it; the file owns the buffer. Messages start with the path.
bnl_status bnl_st_read_file(bnl_st_file *out, const char *path);
void bnl_st_free(bnl_st_file *f);

const bnl_st_tensor *bnl_st_find(const bnl_st_file *f, const char *name);
const char *bnl_st_meta(const bnl_st_file *f, const char *key);   // NULL if absent
// Converts F32/F16/BF16/F64 data to float32 (dst holds t->nelem floats); other dtypes: BNL_ERR_FORMAT.
bnl_status bnl_st_to_f32(float *dst, const bnl_st_tensor *t);
// Converts integer data (I64/I32/I16/I8/U8) to int64.
bnl_status bnl_st_to_i64(int64_t *dst, const bnl_st_tensor *t);

// Writer: collect tensors (data is copied at write time, so pointers must stay valid until then).
typedef struct bnl_st_writer bnl_st_writer;
bnl_status bnl_st_writer_create(bnl_st_writer **out);
bnl_status bnl_st_writer_add(bnl_st_writer *w, const char *name, bnl_dtype dt, int ndim,
                             const int64_t *shape, const void *data);
bnl_status bnl_st_writer_meta(bnl_st_writer *w, const char *key, const char *value);
// Serializes to a malloc'd buffer (caller frees with free()). Tensors are laid out in the order added.
bnl_status bnl_st_writer_to_buffer(bnl_st_writer *w, uint8_t **buf, size_t *len);
// Writes PATH.tmp.<pid>, fsyncs, renames over PATH: PATH is either the old file or the new one.
bnl_status bnl_st_writer_to_file(bnl_st_writer *w, const char *path);
void bnl_st_writer_free(bnl_st_writer *w);

// Writes bytes to path atomically (temp file in the same directory, fsync, rename).
bnl_status bnl_write_file_atomic(const char *path, const uint8_t *buf, size_t len);
// Reads a whole file into a malloc'd buffer (caller frees with free()).
bnl_status bnl_read_file(const char *path, uint8_t **buf, size_t *len);

#endif
