/* libFuzzer target for the y4m reader: any bytes, as a non-seekable stream, must give a clean
 * status and never a crash, leak or out-of-bounds access.
 *
 *   make fuzz FUZZERS=y4m FUZZ_SECONDS=60        (build-fuzz/fuzz/fuzz_y4m FILE replays one input)
 *
 * The reader is opened with a limit of 256x256 = 65536 pixels (y4m_reader_open_fp_limit), so a
 * header claiming W16384 H16384 is refused instead of allocating ~800 MB; at most 4 frames are
 * read. The last input byte picks the chroma upsampling mode, so both paths are covered. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/status.h"
#include "io/y4m.h"

#define FUZZ_MAX_PIXELS (256 * 256)
#define FUZZ_MAX_FRAMES 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0; /* fmemopen refuses an empty buffer */
    mg_clear_error();
    FILE *fp = fmemopen((void *)data, size, "rb");
    if (!fp) return 0;
    y4m_reader r;
    if (y4m_reader_open_fp_limit(&r, fp, "fuzz", FUZZ_MAX_PIXELS) == MG_OK) {
        if ((int64_t)r.width * r.height > FUZZ_MAX_PIXELS) abort(); /* the limit must hold */
        r.upsample = (data[size - 1] & 1) ? Y4M_UPSAMPLE_NEAREST : Y4M_UPSAMPLE_BILINEAR;
        uint8_t *rgb = malloc((size_t)r.width * r.height * 3);
        if (rgb) {
            for (int f = 0; f < FUZZ_MAX_FRAMES; f++) {
                mg_status st = y4m_read_frame(&r, rgb);
                if (st != MG_OK) {
                    if (st != MG_ERR_EOF && st != MG_ERR_FORMAT && st != MG_ERR_IO) abort();
                    if (!mg_last_error()[0]) abort(); /* every failure says why */
                    break;
                }
            }
            free(rgb);
        }
    } else if (!mg_last_error()[0] || r.fp) {
        abort(); /* a failed open leaves a message and a closed reader */
    }
    y4m_reader_close(&r);
    fclose(fp);
    return 0;
}
