/* The wire protocol of mirage serve (see proto.h): parsing and writing message headers. */
#include "serve/proto.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}
static void put_u16(uint8_t *p, int v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static double get_f64(const uint8_t *p) {
    uint64_t u = (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static void put_f64(uint8_t *p, double d) {
    uint64_t u;
    memcpy(&u, &d, 8);
    put_u32(p, (uint32_t)u), put_u32(p + 4, (uint32_t)(u >> 32));
}
static void put_f32(uint8_t *p, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(p, u);
}

int proto_parse_frame(const uint8_t *msg, size_t n, proto_frame *f, char *why, size_t why_n) {
    if (n < PROTO_FRAME_HDR) {
        snprintf(why, why_n, "bad frame message: %zu bytes, shorter than its %d-byte header", n, PROTO_FRAME_HDR);
        return -1;
    }
    if (memcmp(msg, "MGF1", 4)) {
        snprintf(why, why_n, "bad frame message: no MGF1 magic");
        return -1;
    }
    f->seq = get_u32(msg + 4);
    f->t = get_f64(msg + 8);
    f->width = msg[16] | msg[17] << 8;
    f->height = msg[18] | msg[19] << 8;
    f->jpeg = msg + PROTO_FRAME_HDR;
    f->jpeg_len = n - PROTO_FRAME_HDR;
    if (!isfinite(f->t)) {
        snprintf(why, why_n, "bad frame message: timestamp is not a finite number");
        return -1;
    }
    if (f->width < 1 || f->height < 1) {
        snprintf(why, why_n, "bad frame message: size %dx%d", f->width, f->height);
        return -1;
    }
    if (f->jpeg_len < 4 || f->jpeg[0] != 0xFF || f->jpeg[1] != 0xD8) {
        snprintf(why, why_n, "malformed JPEG: no start-of-image marker");
        return -1;
    }
    return 0;
}

void proto_put_out(uint8_t *dst, uint32_t seq, double t, float server_ms, float model_ms, int w, int h,
                   uint32_t dropped) {
    memcpy(dst, "MGO1", 4);
    put_u32(dst + 4, seq);
    put_f64(dst + 8, t);
    put_f32(dst + 16, server_ms);
    put_f32(dst + 20, model_ms);
    put_u16(dst + 24, w);
    put_u16(dst + 26, h);
    put_u32(dst + 28, dropped);
}

void proto_put_frame(uint8_t *dst, uint32_t seq, double t, int w, int h) {
    memcpy(dst, "MGF1", 4);
    put_u32(dst + 4, seq);
    put_f64(dst + 8, t);
    put_u16(dst + 16, w);
    put_u16(dst + 18, h);
}

int proto_parse_config(const char *txt, size_t n, int max_steps, proto_config *c, char *why, size_t why_n) {
    memset(c, 0, sizeof *c);
    cJSON *j = cJSON_ParseWithLength(txt, n);
    int rc = -1;
    if (!j || !cJSON_IsObject(j)) {
        snprintf(why, why_n, "bad control message: not a JSON object");
        goto done;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "config")) {
        snprintf(why, why_n, "bad control message: \"type\" must be \"config\"");
        goto done;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
    if (p) {
        if (!cJSON_IsString(p) || strlen(p->valuestring) >= PROTO_PROMPT_MAX) {
            snprintf(why, why_n, "bad control message: \"prompt\" must be a name shorter than %d bytes", PROTO_PROMPT_MAX);
            goto done;
        }
        c->has_prompt = 1;
        snprintf(c->prompt, sizeof c->prompt, "%s", p->valuestring);
    }
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "steps");
    if (s) {
        if (!cJSON_IsNumber(s) || s->valuedouble != floor(s->valuedouble) || s->valuedouble < 1 ||
            s->valuedouble > max_steps) {
            snprintf(why, why_n, "bad control message: \"steps\" must be an integer 1..%d", max_steps);
            goto done;
        }
        c->steps = (int)s->valuedouble;
    }
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}
