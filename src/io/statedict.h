// ResNet state dicts: torchvision tensor names <-> the model's layout, and loading and saving the
// state as safetensors (from a buffer, a path or an already parsed file; to a buffer, atomically
// to a path, or into a caller's writer). The model itself (src/model/) knows nothing of files.
//
//     bnl_resnet *m;
//     if (bnl_resnet_load_file(&m, "resnet50.safetensors") != BNL_OK) puts(bnl_last_error());
//     bnl_resnet_save_file(m, "out.safetensors");
//     bnl_resnet_free(m);
#ifndef BNL_STATEDICT_H
#define BNL_STATEDICT_H
#include "io/safetensors.h"
#include "model/resnet.h"

// The architecture is read from the names and shapes (see README "The ResNet and its weights");
// every tensor's shape and dtype is checked, and a tensor that is not part of the model is refused
// (BNL_ERR_FORMAT naming it) unless its owner claims it (bnl_checkpoint_owns_tensor).
bnl_status bnl_resnet_load(bnl_resnet **out, const uint8_t *buf, size_t len);
bnl_status bnl_resnet_load_file(bnl_resnet **out, const char *path);
// From an already parsed file. allow_extra: every tensor that is not part of the model is ignored.
bnl_status bnl_resnet_load_parsed(bnl_resnet **out, const bnl_st_file *f, int allow_extra);

// The whole state in the loaded file's names and layouts (conv weights back to OIHW), F32, with
// num_batches_tracked as I64 [] and the file's __metadata__. Handle, then outputs.
bnl_status bnl_resnet_save(const bnl_resnet *m, uint8_t **buf, size_t *len);   // free() the buffer
bnl_status bnl_resnet_save_file(const bnl_resnet *m, const char *path);       // atomic
// Adds the state's tensors and metadata to a caller's writer (to add more, e.g. optimizer state,
// then write once). *keep must be freed with bnl_free() after the writer has written.
bnl_status bnl_resnet_add_to_writer(const bnl_resnet *m, bnl_st_writer *w, void **keep);

// Tensors another owner keeps beside the model in the same file, which loads skip: a training
// checkpoint's `optimizer.*` (defined in src/train/, the only code that knows those names).
int bnl_checkpoint_owns_tensor(const char *name);

#endif
