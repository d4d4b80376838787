/* libFuzzer target for the training-shard parser (src/data/shard.c): any bytes, taken as a whole
 * shard file, must give a clean status and never a crash, leak or out-of-bounds access. When
 * the header and index pass, every frame's range must lie inside the input, and each frame is
 * checked and decoded as the reader does (hash, JPEG header against the clip's size, TurboJPEG
 * decode stopping on warnings), with frames over 1024x1024 skipped to bound memory. Built with
 * FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, which skips the index hash so mutations reach the
 * record checks behind it.
 *
 *   make fuzz FUZZERS=shard FUZZ_SECONDS=60      (build-fuzz/fuzz/fuzz_shard FILE replays one input)
 * (tests/test_fuzz_regress.c runs it without that define: there the hash check stops a mutated
 * index first, as in the program.) */
#include <stdint.h>
#include <stdlib.h>

#include <turbojpeg.h>

#include "core/status.h"
#include "data/shard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mg_clear_error();
    shard_header h;
    mg_status st = shard_header_parse(&h, data, size, size, "fuzz");
    if (st != MG_OK) {
        if (st != MG_ERR_FORMAT || !mg_last_error()[0]) abort();
        return 0;
    }
    shard_tables t;
    st = shard_tables_parse(&t, &h, data + h.tables_offset, (size_t)(size - h.tables_offset), "fuzz");
    if (st != MG_OK) {
        if ((st != MG_ERR_FORMAT && st != MG_ERR_NOMEM) || !mg_last_error()[0]) abort();
        return 0;
    }
    tjhandle tj = tjInitDecompress();
    for (uint32_t c = 0; c < h.n_clips && tj; c++) {
        const shard_clip *cl = &t.clips[c];
        for (uint32_t k = 0; k < cl->n_frames && k < 4; k++) {
            const shard_frame *f = &t.frames[cl->first_frame + k];
            if (f->offset + f->size > size || f->offset < SHARD_HEADER_SIZE) abort(); /* the parser's promise */
            const uint8_t *j = data + f->offset;
            if (shard_frame_hash(j, f->size) != f->hash) continue; /* the reader stops here */
            int w, hh, sub, cs;
            if (tjDecompressHeader3(tj, j, f->size, &w, &hh, &sub, &cs) != 0) continue;
            if (w != (int)cl->width || hh != (int)cl->height || (int64_t)w * hh > 1024 * 1024) continue;
            uint8_t *rgb = malloc((size_t)w * hh * 3);
            if (rgb) tjDecompress2(tj, j, f->size, rgb, w, 0, hh, TJPF_RGB, TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS);
            free(rgb);
        }
    }
    if (tj) tjDestroy(tj);
    shard_tables_free(&t);
    return 0;
}
