// The model card for web/bnlab.mjs (src/model/card.h), and nothing else.
#include "bnlab.h"
#include "core/common.h"
#include "model/card.h"

#include <emscripten.h>
#include <stdlib.h>

// The card of a loaded model as a malloc'd JSON string (the caller frees it with bnl_wasm_free),
// or 0 with bnl_wasm_last_error() set.
EMSCRIPTEN_KEEPALIVE char *bnl_wasm_model_card(const bnl_resnet *m) {
    if (!m) {
        bnl_fail(BNL_ERR_ARG, "model_card: no model");
        return NULL;
    }
    bnl_model_card card;
    bnl_model_card_get(&card, m);
    char *s = bnl_model_card_json(&card);
    if (!s) bnl_fail(BNL_ERR_NOMEM, "model_card: out of memory");
    return s;
}
