/* Data-parallel training (issue 8), the parts without a GPU (src/train/dist.c, batch.c's item0):
 *  - --gpus parsing: counts and lists, every malformed form refused with a message;
 *  - the batch split: for every batch and rank count, the ranks' slices cover the global batch
 *    exactly once, in order, with equal sizes; a batch the count does not divide is refused;
 *  - real batches: rank r's batch (item0 = its first item) is byte for byte the slice of the
 *    global batch a single process makes, for stage dit (frames, noise, sigma, history
 *    corruption draws, prompts) and stage tae, at 2 and 4 ranks; with device_styles the toon and
 *    sketch targets are left as the frames style_apply makes them from, the rest unchanged;
 *  - the rendezvous file: written atomically and read back; an id of another launch (nonce) or
 *    a damaged file is never taken; the wait ends at its timeout, or at once when the launcher
 *    raises the abort flag, with a message naming the file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/status.h"
#include "core/timing.h"
#include "data/data.h"
#include "eval/degrade.h"
#include "mirage.h"
#include "testutil.h"
#include "train/batch.h"
#include "train/dist.h"

#define AUG_DRAWS 8 /* batch.h: aug_draw is (B, T, 8) */

static void test_parse_gpus(void **state) {
    (void)state;
    int g[DIST_MAX_GPUS], n;
    assert_int_equal(dist_parse_gpus("2", g, &n), MG_OK);
    assert_int_equal(n, 2);
    assert_int_equal(g[0], 0);
    assert_int_equal(g[1], 1);
    assert_int_equal(dist_parse_gpus("16", g, &n), MG_OK);
    assert_int_equal(n, 16);
    assert_int_equal(g[15], 15);
    assert_int_equal(dist_parse_gpus("0,2", g, &n), MG_OK);
    assert_int_equal(n, 2);
    assert_int_equal(g[0], 0);
    assert_int_equal(g[1], 2);
    assert_int_equal(dist_parse_gpus("3,1,7", g, &n), MG_OK);
    assert_int_equal(n, 3);
    assert_int_equal(g[2], 7);
    const char *bad[] = {"", "0", "17", "-1", "abc", "2x", " 2", "0,0", "1,", ",1", "1,,2", "0,-1", "0, 1", "+1,2",
                         "1,2,a", "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mg_status s = dist_parse_gpus(bad[i], g, &n);
        printf("  --gpus '%s': %s\n", bad[i], s == MG_OK ? "accepted" : mg_last_error());
        assert_int_equal(s, MG_ERR_ARG);
        assert_non_null(strstr(mg_last_error(), "--gpus"));
    }
    assert_int_equal(dist_parse_gpus(NULL, g, &n), MG_ERR_ARG);
}

static void test_split_covers_batch(void **state) {
    (void)state;
    for (int B = 1; B <= 64; B++)
        for (int N = 1; N <= DIST_MAX_GPUS; N++) {
            int first, count;
            if (B % N) {
                assert_int_equal(dist_split(B, N, 0, &first, &count), MG_ERR_ARG);
                assert_non_null(strstr(mg_last_error(), "not a multiple"));
                continue;
            }
            int seen[64] = {0}, next = 0;
            for (int r = 0; r < N; r++) {
                assert_int_equal(dist_split(B, N, r, &first, &count), MG_OK);
                assert_int_equal(count, B / N);
                assert_int_equal(first, next); /* in rank order, no gap */
                for (int i = first; i < first + count; i++) seen[i]++;
                next = first + count;
            }
            assert_int_equal(next, B);
            for (int i = 0; i < B; i++) assert_int_equal(seen[i], 1);
        }
    int f, c;
    assert_int_equal(dist_split(4, 2, 2, &f, &c), MG_ERR_ARG);
    assert_int_equal(dist_split(4, 0, 0, &f, &c), MG_ERR_ARG);
}

/* ---- real batches --------------------------------------------------------------------------- */

static char g_dir[256];

static void write_ppm(const char *path, int W, int H, int seed) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fprintf(f, "P6\n%d %d\n255\n", W, H);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) fputc((x * (3 + seed) + y * (5 + c) + 40 * seed + (x * y) % 17) & 255, f);
    fclose(f);
}

static int setup_data(void **state) {
    (void)state;
    if (!data_build_available()) return 0;
    snprintf(g_dir, sizeof g_dir, "/tmp/mirage-dist-XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    char src[300], out[300];
    snprintf(src, sizeof src, "%s/src", g_dir);
    snprintf(out, sizeof out, "%s/data", g_dir);
    mkdir(src, 0755);
    char *paths[6];
    for (int i = 0; i < 6; i++) {
        paths[i] = malloc(320);
        snprintf(paths[i], 320, "%s/photo%c.ppm", src, 'a' + i);
        write_ppm(paths[i], 160, 128, i);
    }
    data_build_opts o = data_build_defaults();
    o.out_dir = out;
    o.quiet = 1;
    o.photo_short = 96;
    mg_status s = data_build(&o, paths, 6);
    for (int i = 0; i < 6; i++) free(paths[i]);
    if (s != MG_OK) printf("  data_build: %s\n", mg_last_error());
    return s == MG_OK ? 0 : -1;
}

static int teardown_data(void **state) {
    (void)state;
    if (g_dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0) return -1;
    }
    return 0;
}

/* Items of `steps` batches drawn with c, every one from row r1 or r2: how many of each */
static void count_two(const batch_cfg *c, dataset *ds, int steps, int r1, int r2, int *n1, int *n2) {
    train_batch m;
    assert_int_equal(batch_alloc(&m, c), MG_OK);
    *n1 = *n2 = 0;
    for (long st = 0; st < steps; st++) {
        assert_int_equal(batch_sample(&m, c, ds, st), MG_OK);
        for (int i = 0; i < c->B; i++) {
            assert_true(m.item[i].prompt == r1 || m.item[i].prompt == r2);
            *n1 += m.item[i].prompt == r1, *n2 += m.item[i].prompt == r2;
        }
    }
    batch_free(&m);
}

static void check_slices(train_stage stage) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/data", g_dir);
    dataset *ds;
    assert_int_equal(dataset_open(&ds, dir, "train"), MG_OK);
    mg_config cfg;
    assert_int_equal(mg_config_named("tiny", &cfg), MG_OK);
    char tmp[] = "/tmp/mirage-dist-model-XXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(mg_model_init_file(tmp, &cfg, 1, 0), MG_OK);
    train_params tp;
    assert_int_equal(train_params_load(&tp, tmp), MG_OK);
    unlink(tmp);
    batch_cfg bc;
    memset(&bc, 0, sizeof bc);
    bc.stage = stage, bc.B = 8, bc.T = 3, bc.S = 32, bc.window = 2, bc.hist_aug = 1, bc.prompt_dropout = 0.3f;
    bc.seed = 42;
    batch_cfg_from_params(&bc, &tp);
    train_batch whole;
    assert_int_equal(batch_alloc(&whole, &bc), MG_OK);
    const long step = 7;
    assert_int_equal(batch_sample(&whole, &bc, ds, step), MG_OK);
    int T = whole.T;
    size_t px = (size_t)bc.S * bc.S * 3, lat = (size_t)whole.lh * whole.lw * whole.Z;
    for (int N = 2; N <= 4; N *= 2) {
        for (int r = 0; r < N; r++) {
            batch_cfg rc = bc;
            assert_int_equal(dist_split(bc.B, N, r, &rc.item0, &rc.B), MG_OK);
            train_batch part;
            assert_int_equal(batch_alloc(&part, &rc), MG_OK);
            assert_int_equal(batch_sample(&part, &rc, ds, step), MG_OK);
            size_t i0 = (size_t)rc.item0, nb = (size_t)rc.B;
            assert_memory_equal(part.in_rgb, whole.in_rgb + i0 * T * px, nb * T * px);
            if (stage == STAGE_DIT) {
                assert_memory_equal(part.tgt_rgb, whole.tgt_rgb + i0 * T * px, nb * T * px);
                assert_memory_equal(part.eps, whole.eps + i0 * T * lat, nb * T * lat * sizeof(float));
                assert_memory_equal(part.sigma, whole.sigma + i0 * T, nb * T * sizeof(float));
                assert_memory_equal(part.aug_draw, whole.aug_draw + i0 * T * AUG_DRAWS, nb * T * AUG_DRAWS * sizeof(float));
            } else {
                assert_memory_equal(part.img, whole.img + i0 * px, nb * px * sizeof(float));
            }
            for (size_t i = 0; i < nb; i++) {
                const batch_item *a = &part.item[i], *b = &whole.item[i0 + i];
                assert_int_equal(a->prompt, b->prompt);
                assert_int_equal(a->row, b->row);
                assert_int_equal(a->dream, b->dream);
                assert_memory_equal(a->aug, b->aug, sizeof a->aug);
            }
            batch_free(&part);
        }
        printf("  stage %s: %d ranks x %d items = the global batch of %d, byte for byte\n",
               stage == STAGE_DIT ? "dit" : "tae", N, bc.B / N, bc.B);
    }
    /* --train-prompts (batch_cfg_prompts): toon and sketch only, every item from them and both
     * used; weighted 3:1, about three toon items to one sketch */
    {
        batch_cfg mc = bc, wc = bc, ec = bc;
        mc.B = wc.B = 16;
        assert_int_equal(batch_cfg_prompts(&mc, "style:toon,style:sketch"), MG_OK);
        assert_int_equal(batch_cfg_prompts(&wc, "style:toon=3,style:sketch"), MG_OK);
        assert_int_equal(batch_cfg_prompts(&ec, "style:toon,none"), MG_ERR_ARG); /* none makes no pairs */
        int r1 = -1, r2 = -1;
        for (int i = 0; i < mc.n_prompts; i++) {
            if (!strcmp(mc.prompts[i], "style:toon")) r1 = i;
            if (!strcmp(mc.prompts[i], "style:sketch")) r2 = i;
        }
        assert_true(r1 > 0 && r2 > 0);
        int m1, m2, w1, w2;
        count_two(&mc, ds, 3, r1, r2, &m1, &m2);
        count_two(&wc, ds, 6, r1, r2, &w1, &w2);
        printf("  stage %s, --train-prompts toon,sketch: 48 items, %d toon, %d sketch; weighted 3:1: 96 items, %d toon, "
               "%d sketch\n", stage == STAGE_DIT ? "dit" : "tae", m1, m2, w1, w2);
        assert_true(m1 > 0 && m2 > 0);
        assert_true(w1 >= 60 && w1 <= 84 && w2 > 0); /* 72 expected; binomial sd 4.2 */
        if (stage == STAGE_DIT) { /* device_styles: the targets left for the GPU, and nothing else changed */
            batch_cfg dc = mc;
            dc.device_styles = 1;
            train_batch a, d;
            assert_int_equal(batch_alloc(&a, &mc), MG_OK);
            assert_int_equal(batch_alloc(&d, &dc), MG_OK);
            assert_int_equal(batch_sample(&a, &mc, ds, 3), MG_OK);
            assert_int_equal(batch_sample(&d, &dc, ds, 3), MG_OK);
            assert_memory_equal(a.in_rgb, d.in_rgb, (size_t)mc.B * T * px);
            uint8_t *styled = malloc(px);
            int left = 0;
            for (int f = 0; f < mc.B * T; f++) {
                const char *p = mc.prompts[d.item[f / T].prompt];
                assert_int_equal(a.style[f], STYLE_NONE);
                assert_int_equal(d.style[f], style_kind(p)); /* toon or sketch: every item is one */
                assert_int_equal(style_apply(p, d.tgt_rgb + f * px, styled, bc.S, bc.S), MG_OK);
                assert_memory_equal(styled, a.tgt_rgb + f * px, px);
                left += memcmp(d.tgt_rgb + f * px, a.tgt_rgb + f * px, px) != 0;
            }
            printf("  device_styles: %d of %d targets left unstyled for the GPU, each style_apply's input\n", left,
                   mc.B * T);
            assert_true(left > mc.B * T / 2);
            free(styled);
            batch_free(&a), batch_free(&d);
        }
    }
    /* and the slices differ from each other (the items are not all alike) */
    if (stage == STAGE_DIT) assert_true(memcmp(whole.eps, whole.eps + T * lat, T * lat * sizeof(float)) != 0);
    else assert_true(memcmp(whole.in_rgb, whole.in_rgb + px, px) != 0);
    batch_free(&whole);
    train_params_free(&tp);
    dataset_close(ds);
}

static void test_rank_batches_are_slices(void **state) {
    (void)state;
    if (!data_build_available()) {
        printf("  skip: this build cannot make shards (FFmpeg and libjpeg-turbo needed)\n");
        skip();
    }
    check_slices(STAGE_DIT);
    check_slices(STAGE_TAE);
}

/* ---- the rendezvous file ---------------------------------------------------------------------- */

static void test_rendezvous_file(void **state) {
    (void)state;
    char dir[] = "/tmp/mirage-dist-id-XXXXXX", path[300];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/run.ckpt.nccl-id", dir);
    unsigned char id[DIST_ID_BYTES], got[DIST_ID_BYTES];
    for (int i = 0; i < DIST_ID_BYTES; i++) id[i] = (unsigned char)(i * 37 + 11);
    const uint64_t nonce = 0x1234abcd5678ef90ull;
    /* nothing there: the wait ends at its timeout with a message naming the file */
    double t0 = mg_now_ms();
    assert_int_equal(dist_id_wait(path, nonce, got, sizeof got, 0.3), MG_ERR_IO);
    double waited = mg_now_ms() - t0;
    printf("  no file: %s (%.0f ms)\n", mg_last_error(), waited);
    assert_true(waited >= 250 && waited < 5000);
    assert_non_null(strstr(mg_last_error(), path));
    /* written and read back */
    assert_int_equal(dist_id_write(path, nonce, id, sizeof id), MG_OK);
    memset(got, 0, sizeof got);
    assert_int_equal(dist_id_wait(path, nonce, got, sizeof got, 1.0), MG_OK);
    assert_memory_equal(got, id, sizeof id);
    /* no temporary left beside it */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 1", dir);
    assert_int_equal(system(cmd), 0);
    /* another launch's id is not taken */
    assert_int_equal(dist_id_wait(path, nonce + 1, got, sizeof got, 0.2), MG_ERR_IO);
    /* damaged files: truncated, foreign, bad hex */
    const char *damaged[] = {"mirage-nccl-id 1 1234abcd5678ef90 00ff", "hello world\n", "",
                             "mirage-nccl-id 2 1234abcd5678ef90 00\n", "mirage-nccl-id 1 1234abcd5678ef90 zz"};
    for (size_t k = 0; k < sizeof damaged / sizeof *damaged; k++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(damaged[k], f);
        if (k == 4)
            for (int i = 0; i < 2 * DIST_ID_BYTES; i++) fputc('z', f);
        fclose(f);
        assert_int_equal(dist_id_wait(path, nonce, got, sizeof got, 0.1), MG_ERR_IO);
    }
    /* the launcher's abort flag ends a wait at once */
    dist_abort_flag = 1;
    t0 = mg_now_ms();
    assert_int_equal(dist_id_wait(path, nonce, got, sizeof got, 60.0), MG_ERR_IO);
    assert_true(mg_now_ms() - t0 < 1000);
    assert_non_null(strstr(mg_last_error(), "another rank failed"));
    dist_abort_flag = 0;
    /* a folder that does not exist */
    char nodir[400];
    snprintf(nodir, sizeof nodir, "%s/missing/x.nccl-id", dir);
    assert_int_equal(dist_id_write(nodir, nonce, id, sizeof id), MG_ERR_IO);
    printf("  missing folder: %s\n", mg_last_error());
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_timeout_setting(void **state) {
    (void)state;
    unsetenv("MIRAGE_DIST_TIMEOUT");
    assert_true(dist_timeout_default() == 600.0);
    setenv("MIRAGE_DIST_TIMEOUT", "30", 1);
    assert_true(dist_timeout_default() == 30.0);
    setenv("MIRAGE_DIST_TIMEOUT", "soon", 1);
    assert_true(dist_timeout_default() == 600.0);
    setenv("MIRAGE_DIST_TIMEOUT", "0.1", 1);
    assert_true(dist_timeout_default() == 600.0);
    unsetenv("MIRAGE_DIST_TIMEOUT");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_gpus),
        cmocka_unit_test(test_split_covers_batch),
        cmocka_unit_test(test_rank_batches_are_slices),
        cmocka_unit_test(test_rendezvous_file),
        cmocka_unit_test(test_timeout_setting),
    };
    return cmocka_run_group_tests(tests, setup_data, teardown_data);
}
