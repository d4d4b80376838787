/* YUV4MPEG2 (.y4m) frame reader and writer. The API side is always RGB24: H x W x 3 bytes,
 * RGB interleaved, row-major (the layout of mg_stream_step).
 *
 * Reader. Works on any FILE*, pipes included: it never seeks. The stream header is parsed
 * strictly: magic "YUV4MPEG2", W and H required (1..Y4M_MAX_DIM), F num:den (default 25:1,
 * zero numerator or denominator rejected), I (p t b m ?), A num:den, X (ignored), C one of
 * 420jpeg 420paldv 420mpeg2 420 (all 4:2:0, chroma planes (W+1)/2 x (H+1)/2), 444, mono
 * (default 420jpeg). Anything else (422, 420p10, 444alpha, unknown tag letters, duplicate
 * tags) is MG_ERR_FORMAT with a message. X parameters are ignored except ffmpeg's
 * XCOLORRANGE=FULL|LIMITED, which picks the range below. The header line is at most Y4M_MAX_LINE bytes, as
 * is each FRAME line (its parameters are skipped).
 *
 * Colour: BT.601, limited range (Y 16..235, Cb/Cr 16..240), which is what ffmpeg writes
 * and assumes for y4m; full range (JFIF) when the header carries XCOLORRANGE=FULL, as
 * ffmpeg writes for gray (Cmono) and yuvj420p. Integer arithmetic with 16 fractional bits
 * (chroma with 4 more after upsampling), rounded once, clamped to 0..255.
 * Chroma upsampling (4:2:0 -> RGB) is bilinear by default with the chroma sample centred
 * between its 2x2 luma block (JPEG/MPEG-1 siting, the 9-3-3-1 filter of libjpeg's "fancy"
 * upsampling); set r->upsample = Y4M_UPSAMPLE_NEAREST after opening for sample replication
 * (what ffmpeg's unscaled yuv420p->rgb24 path does). All three 4:2:0 variants are decoded
 * with centred siting: for 420mpeg2 (left-sited) and 420paldv this is a quarter-pixel chroma
 * shift, which we accept.
 *
 * Writer. RGB -> BT.601 limited range, 4:2:0 with each chroma sample the mean of its 2x2
 * block (fewer pixels at odd right/bottom edges), header "C420jpeg XCOLORRANGE=LIMITED";
 * this matches ffmpeg's rgb24 -> yuv420p with area scaling to within 1 level. Expected round
 * trip error RGB -> y4m -> RGB (bilinear), measured in tests/test_y4m.c: on a smooth image,
 * mean 0.3 and max 2 levels inside (the 8-bit limited-range quantisation), up to ~6 on the
 * outermost row/column where edge-replicated chroma is half a pixel off; flat colours within
 * 1 level, black and white exact. Near sharp colour edges 4:2:0 itself loses detail (tens of
 * levels at the edge pixel): on the test scene the mean is 0.8 at 256x256, 1.5 at 128x96.
 *
 * Writing a regular file goes to "PATH.tmp.<pid>" and is renamed onto PATH by
 * y4m_writer_close (after fflush and fsync), so an aborted run never leaves a partial file
 * where a good one was; y4m_writer_abort deletes the temporary. "-" writes to stdout, and an
 * existing non-regular path (a FIFO, /dev/null) is written in place. Every fwrite, fflush,
 * fsync and fclose is checked: failures are MG_ERR_IO naming the path and strerror(errno).
 * A program that writes into a pipe should ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)) so that
 * a closed reader shows up here as MG_ERR_IO (EPIPE) instead of killing the process; the
 * library does not touch signal dispositions.
 *
 * Every call returns mg_status and sets mg_last_error(); nothing exits or aborts. */
#ifndef MG_IO_Y4M_H
#define MG_IO_Y4M_H

#include <stdint.h>
#include <stdio.h>

#include "mirage.h"

#define Y4M_MAX_DIM 16384 /* W and H are each at most this */
#define Y4M_MAX_LINE 1024 /* header and FRAME lines, newline included */

typedef enum y4m_chroma { Y4M_C420 = 0, Y4M_C444, Y4M_CMONO } y4m_chroma;
typedef enum y4m_upsample { Y4M_UPSAMPLE_BILINEAR = 0, Y4M_UPSAMPLE_NEAREST } y4m_upsample;

typedef struct y4m_reader {
    int width, height;      /* W, H in pixels */
    int fps_num, fps_den;   /* F num:den (25:1 when absent) */
    int aspect_num, aspect_den; /* A (0:0 = unknown, the default) */
    char interlace;         /* I: 'p' 't' 'b' 'm' or '?' (default '?') */
    int full_range;         /* 1 if the header says XCOLORRANGE=FULL (ffmpeg: gray, yuvj420p) */
    y4m_chroma chroma;      /* C, as a family */
    char chroma_tag[16];    /* C as written ("420jpeg" when absent) */
    y4m_upsample upsample;  /* may be changed between frames; bilinear after open */
    int chroma_w, chroma_h; /* chroma plane size (0 for mono) */
    size_t frame_bytes;     /* one frame's YUV payload after its FRAME line */
    int64_t frames_read;    /* frames returned so far */

    /* private */
    FILE *fp;
    int owns_fp;            /* fclose on close (opened from a path other than "-") */
    char name[256];         /* for messages */
    uint8_t *yuv;           /* (frame_bytes) one frame's planes */
    int32_t *rowbuf;        /* (2 * chroma_w) vertically blended chroma rows, x4 */
    int16_t *upbuf;         /* (2, width) one upsampled row of Cb and of Cr, x16 */
} y4m_reader;

/* Opens path ("-" = stdin) and parses the stream header. On failure *r is left closed
 * (y4m_reader_close on it is a no-op). */
mg_status y4m_reader_open(y4m_reader *r, const char *path);
/* Reads from an open stream, which the reader does not own: y4m_reader_close leaves fp open.
 * name is used in messages only. */
mg_status y4m_reader_open_fp(y4m_reader *r, FILE *fp, const char *name);
/* As y4m_reader_open_fp, and refuses (MG_ERR_FORMAT) a stream whose W*H exceeds max_pixels
 * (0: only the Y4M_MAX_DIM bound, i.e. up to 805 MB for a 444 frame buffer). Use it wherever
 * the input is untrusted; the fuzzer passes 256*256. */
mg_status y4m_reader_open_fp_limit(y4m_reader *r, FILE *fp, const char *name, int64_t max_pixels);
/* Reads the next frame into rgb (height x width x 3). MG_OK; MG_ERR_EOF at a clean end
 * (end of input exactly at a frame boundary); MG_ERR_FORMAT for a bad FRAME line or a frame
 * cut short (the message names the stream and the 0-based frame number); MG_ERR_IO for a
 * read error. */
mg_status y4m_read_frame(y4m_reader *r, uint8_t *rgb);
void y4m_reader_close(y4m_reader *r);

typedef struct y4m_writer {
    int width, height, fps_num, fps_den;
    int64_t frames_written;

    /* private */
    FILE *fp;
    int mode;               /* 0 closed, 1 temp file + rename, 2 in place (FIFO, device), 3 stdout */
    int failed;             /* a write failed: close will not publish the file */
    char keep_path[4096];   /* where a failed file is kept (PATH, or beside an earlier file at PATH) */
    char path[4096];        /* the destination */
    char tmp[4128];         /* PATH.tmp.<pid> while writing (mode 1) */
    size_t frame_bytes;
    size_t header_bytes;    /* the stream header line, so a failed file can be cut to whole frames */
    uint8_t *yuv;           /* (frame_bytes) one frame's planes */
} y4m_writer;

/* Opens path ("-" = stdout) for W x H frames at fps_num/fps_den and writes the header. */
mg_status y4m_writer_open(y4m_writer *w, const char *path, int width, int height, int fps_num,
                          int fps_den);
mg_status y4m_write_frame(y4m_writer *w, const uint8_t *rgb);
/* Finalises: fflush, fsync, fclose, rename onto the path. The file then holds every frame
 * written. If a write failed (a full disk, say), the file is cut back to the last whole frame
 * and published all the same, so the frames written so far are kept; the result is then
 * MG_ERR_IO naming the failure and the frames kept. Closing a closed writer is MG_OK. */
mg_status y4m_writer_close(y4m_writer *w);
/* Gives up: closes and deletes the temporary file; the path keeps whatever it had before.
 * (For stdout or a FIFO the bytes already written are gone out; abort just stops.) */
void y4m_writer_abort(y4m_writer *w);

#endif
