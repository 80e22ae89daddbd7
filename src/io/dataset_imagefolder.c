// ImageFolder: a placeholder until the decoder lands.
#include "io/dataset_internal.h"
#include <string.h>

bnl_imagefolder_opts bnl_imagefolder_opts_default(void) {
    bnl_imagefolder_opts o;
    memset(&o, 0, sizeof o);
    o.size = 224;
    return o;
}

bnl_status bnl_dataset_imagefolder(bnl_dataset **out, const char *root, const bnl_imagefolder_opts *o) {
    if (out) *out = NULL;
    return bnl_fail(BNL_ERR_UNSUPPORTED, "imagefolder: not implemented yet");
}
