/* The synthetic camera of the training-clip reader (src/data/dataset.c), apart so tests can
 * check its geometry: a smooth random path of pan, zoom, roll and hand-held shake over a photo.
 * Frame t shows, at output pixel (u, v) of an S x S frame, the photo at
 *     (cx, cy) + scale * R(theta) * (u + 0.5 - S/2, v + 0.5 - S/2)     (u mirrored when flip)
 * in photo pixel coordinates (pixel centres at .5). Every view lies inside [0, w] x [0, h]. */
#ifndef MG_DATA_CAMERA_H
#define MG_DATA_CAMERA_H

#include "core/rng.h"

#define CAMERA_MAX_ROLL 0.17f /* radians (about 10 degrees) */

typedef struct camera_view {
    float cx, cy;  /* centre, photo pixels */
    float scale;   /* photo pixels per output pixel */
    float theta;   /* roll, radians */
} camera_view;

/* Draws the path of T views over a w x h photo from r (a fixed number of draws). */
void camera_path(mg_rng *r, int T, int S, int w, int h, camera_view *views, int *flip);

#endif
