// Procedural shapes, drawn on demand from (seed, index) in integer arithmetic only, so an image is
// the same bytes natively and in wasm (the one floating-point operation, sqrt of an integer, is
// correctly rounded by IEEE 754 on every target).
//
// Geometry lives in Q16 image units (65536 = the image side), so an image looks the same at every
// size. Each shape has a signed distance (negative inside, Q16 units) whose value over one pixel
// gives the antialiased coverage. What varies per image, independently of the class: background
// (two-colour gradient + low-frequency value noise + clutter of small disks and lines), object
// colour and texture (solid, gradient, speckle, border), position, scale, rotation, mirror, a
// colour cast, brightness/contrast and pixel noise. Colour says nothing about the class, so a
// classifier has to see the shape.
#include "io/dataset_internal.h"
#include "core/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_names[BNL_PROCEDURAL_MAX_CLASSES] = {
    "circle",  "square",  "triangle", "ring",    "cross",   "star",       "ellipse", "diamond",
    "stripes", "checker", "hexagon",  "crescent", "semicircle", "frame", "l-shape", "t-shape",
};

enum { C_CIRCLE, C_SQUARE, C_TRIANGLE, C_RING, C_CROSS, C_STAR, C_ELLIPSE, C_DIAMOND,
       C_STRIPES, C_CHECKER, C_HEXAGON, C_CRESCENT, C_SEMICIRCLE, C_FRAME, C_LSHAPE, C_TSHAPE };

typedef struct proc_impl {
    uint64_t seed;
    int size;
    int label_offset;
} proc_impl;

// ---- fixed-point trigonometry (degrees, Q14) ------------------------------------------------------
static const int16_t k_sin_q14[91] = {
    0, 286, 572, 857, 1143, 1428, 1713, 1997, 2280, 2563, 2845, 3126, 3406,
    3686, 3964, 4240, 4516, 4790, 5063, 5334, 5604, 5872, 6138, 6402, 6664, 6924,
    7182, 7438, 7692, 7943, 8192, 8438, 8682, 8923, 9162, 9397, 9630, 9860, 10087,
    10311, 10531, 10749, 10963, 11174, 11381, 11585, 11786, 11982, 12176, 12365, 12551, 12733,
    12911, 13085, 13255, 13421, 13583, 13741, 13894, 14044, 14189, 14330, 14466, 14598, 14726,
    14849, 14968, 15082, 15191, 15296, 15396, 15491, 15582, 15668, 15749, 15826, 15897, 15964,
    16026, 16083, 16135, 16182, 16225, 16262, 16294, 16322, 16344, 16362, 16374, 16382, 16384,
};

static int64_t isin(int deg) {
    deg %= 360;
    if (deg < 0) deg += 360;
    if (deg <= 90) return k_sin_q14[deg];
    if (deg <= 180) return k_sin_q14[180 - deg];
    if (deg <= 270) return -k_sin_q14[deg - 180];
    return -k_sin_q14[360 - deg];
}
static int64_t icos(int deg) { return isin(deg + 90); }

static int64_t isqrt(int64_t v) { return v <= 0 ? 0 : (int64_t)sqrt((double)v); }
static int64_t iabs(int64_t v) { return v < 0 ? -v : v; }
static int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t iclamp(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }
// floor division and non-negative modulo (C division truncates toward zero)
static int64_t ifloordiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static int64_t imod(int64_t a, int64_t b) { int64_t m = a % b; return m < 0 ? m + b : m; }

static int rnd(bnl_rng *r, int lo, int hi) { return lo + (int)bnl_rng_below(r, (uint32_t)(hi - lo + 1)); }

// ---- shapes -------------------------------------------------------------------------------------
#define MAX_EDGES 6
#define MAX_PARTS 2

// A convex polygon as half-planes: inside where nx*x + ny*y - c14 <= 0 for every edge (n in Q14).
typedef struct poly { int n; int64_t nx[MAX_EDGES], ny[MAX_EDGES], c14[MAX_EDGES]; } poly;

// vertices (Q16 image units), any orientation
static void poly_make(poly *p, const int64_t *vx, const int64_t *vy, int n) {
    int64_t mx = 0, my = 0;
    for (int k = 0; k < n; k++) mx += vx[k], my += vy[k];
    mx /= n, my /= n;
    p->n = n;
    for (int k = 0; k < n; k++) {
        int64_t ex = vx[(k + 1) % n] - vx[k], ey = vy[(k + 1) % n] - vy[k];
        int64_t len = isqrt(ex * ex + ey * ey);
        if (len < 1) len = 1;
        int64_t nx = ey * 16384 / len, ny = -ex * 16384 / len;
        int64_t c14 = nx * vx[k] + ny * vy[k];
        if (nx * mx + ny * my - c14 > 0) nx = -nx, ny = -ny, c14 = -c14;   // point outward
        p->nx[k] = nx, p->ny[k] = ny, p->c14[k] = c14;
    }
}

static int64_t poly_sd(const poly *p, int64_t x, int64_t y) {
    int64_t m = INT64_MIN;
    for (int k = 0; k < p->n; k++) m = imax(m, p->nx[k] * x + p->ny[k] * y - p->c14[k]);
    return ifloordiv(m, 16384);
}

// The object: its center, size r, rotation and the class-specific parameters.
typedef struct shape {
    int cls;
    int64_t cx, cy, r;
    int64_t ca, sa;             // cos/sin of the rotation (Q14)
    int mirror;                 // 1: local y negated
    int64_t p0, p1;             // class parameters (Q16)
    poly part[MAX_PARTS];       // polygon parts (union)
    int nparts;
    int region;                 // stripes/checker: 0 disk, 1 square
    int64_t tnx, tny, tc14;     // star: the folded edge line, or the semicircle's cut
} shape;

// local coordinates of (x, y): rotated into the shape's frame
static void to_local(const shape *s, int64_t x, int64_t y, int64_t *lx, int64_t *ly) {
    int64_t dx = x - s->cx, dy = y - s->cy;
    *lx = ifloordiv(dx * s->ca + dy * s->sa, 16384);
    *ly = ifloordiv(-dx * s->sa + dy * s->ca, 16384);
    if (s->mirror) *ly = -*ly;
}

// a local-frame point to image coordinates
static void to_image(const shape *s, int64_t lx, int64_t ly, int64_t *x, int64_t *y) {
    if (s->mirror) ly = -ly;
    *x = s->cx + ifloordiv(lx * s->ca - ly * s->sa, 16384);
    *y = s->cy + ifloordiv(lx * s->sa + ly * s->ca, 16384);
}

// an axis-aligned rectangle of the local frame as a polygon part
static void add_rect(shape *s, int64_t x0, int64_t y0, int64_t x1, int64_t y1) {
    int64_t lx[4] = {x0, x1, x1, x0}, ly[4] = {y0, y0, y1, y1}, vx[4], vy[4];
    for (int k = 0; k < 4; k++) to_image(s, lx[k], ly[k], &vx[k], &vy[k]);
    poly_make(&s->part[s->nparts++], vx, vy, 4);
}

static void add_regular(shape *s, int n, int64_t radius, int phase_deg) {
    int64_t vx[MAX_EDGES], vy[MAX_EDGES];
    for (int k = 0; k < n; k++) {
        int a = phase_deg + k * 360 / n;
        to_image(s, icos(a) * radius / 16384, isin(a) * radius / 16384, &vx[k], &vy[k]);
    }
    poly_make(&s->part[s->nparts++], vx, vy, n);
}

static int64_t box_sd(int64_t lx, int64_t ly, int64_t h) {
    int64_t dx = iabs(lx) - h, dy = iabs(ly) - h;
    int64_t ox = imax(dx, 0), oy = imax(dy, 0);
    return isqrt(ox * ox + oy * oy) + imin(imax(dx, dy), 0);
}

static void shape_setup(shape *s, bnl_rng *r) {
    int64_t R = s->r;
    s->nparts = 0;
    switch (s->cls) {
    case C_CIRCLE: s->p0 = R * rnd(r, 80, 100) / 100; break;
    case C_SQUARE: add_rect(s, -R * 3 / 4, -R * 3 / 4, R * 3 / 4, R * 3 / 4); break;
    case C_TRIANGLE: add_regular(s, 3, R, 0); break;
    case C_HEXAGON: add_regular(s, 6, R * 95 / 100, 0); break;
    case C_DIAMOND: {
        int64_t b = R * rnd(r, 45, 62) / 100, vx[4], vy[4];
        to_image(s, R, 0, &vx[0], &vy[0]);
        to_image(s, 0, b, &vx[1], &vy[1]);
        to_image(s, -R, 0, &vx[2], &vy[2]);
        to_image(s, 0, -b, &vx[3], &vy[3]);
        poly_make(&s->part[s->nparts++], vx, vy, 4);
        break;
    }
    case C_RING:
        s->p1 = R * rnd(r, 25, 42) / 100;   // thickness
        s->p0 = R - s->p1 / 2;              // mid radius
        break;
    case C_CROSS: {
        int64_t w = R * rnd(r, 20, 30) / 100;
        add_rect(s, -R, -w, R, w);
        add_rect(s, -w, -R, w, R);
        break;
    }
    case C_LSHAPE: {
        int64_t h = R * 3 / 4, w = R * rnd(r, 20, 28) / 100;
        add_rect(s, -h, -h, -h + 2 * w, h);
        add_rect(s, -h, h - 2 * w, h, h);
        break;
    }
    case C_TSHAPE: {
        int64_t h = R * 4 / 5, w = R * rnd(r, 18, 26) / 100;
        add_rect(s, -h, -h, h, -h + 2 * w);
        add_rect(s, -w, -h, w, h);
        break;
    }
    case C_FRAME:
        s->p0 = R * 4 / 5;                     // outer half-size
        s->p1 = s->p0 - R * rnd(r, 18, 28) / 100;   // inner half-size
        break;
    case C_STAR: {
        // folded into one half-spike: the edge from the tip (R, 0) to the inner vertex at 36 deg
        int64_t ri = R * rnd(r, 38, 50) / 100;
        int64_t tx = R, ty = 0, ix = icos(36) * ri / 16384, iy = isin(36) * ri / 16384;
        int64_t ex = ix - tx, ey = iy - ty, len = isqrt(ex * ex + ey * ey);
        int64_t nx = -ey * 16384 / len, ny = ex * 16384 / len;   // pointing away from the origin
        if (nx < 0) nx = -nx, ny = -ny;
        s->tnx = nx, s->tny = ny, s->tc14 = nx * tx + ny * ty;
        break;
    }
    case C_ELLIPSE:
        s->p0 = R;
        s->p1 = R * rnd(r, 35, 58) / 100;
        break;
    case C_CRESCENT:
        s->p0 = R * rnd(r, 72, 88) / 100;   // radius of the bite
        s->p1 = R * rnd(r, 38, 55) / 100;   // its offset
        break;
    case C_SEMICIRCLE: break;
    case C_STRIPES:
    case C_CHECKER:
        s->region = rnd(r, 0, 1);
        s->p0 = s->cls == C_STRIPES ? R * rnd(r, 36, 60) / 100 : R * rnd(r, 44, 70) / 100;   // period
        s->p1 = rnd(r, 0, 65535);   // phase
        break;
    }
}

// signed distance of the object outline (Q16 units)
static int64_t shape_sd(const shape *s, int64_t x, int64_t y) {
    int64_t lx, ly, R = s->r;
    if (s->nparts) {
        int64_t d = INT64_MAX;
        for (int k = 0; k < s->nparts; k++) d = imin(d, poly_sd(&s->part[k], x, y));
        return d;
    }
    to_local(s, x, y, &lx, &ly);
    switch (s->cls) {
    case C_CIRCLE: return isqrt(lx * lx + ly * ly) - s->p0;
    case C_SEMICIRCLE: return imax(isqrt(lx * lx + ly * ly) - R, ly);
    case C_RING: return iabs(isqrt(lx * lx + ly * ly) - s->p0) - s->p1 / 2;
    case C_FRAME: return imax(box_sd(lx, ly, s->p0), -box_sd(lx, ly, s->p1));
    case C_CRESCENT: {
        int64_t d1 = isqrt(lx * lx + ly * ly) - R, bx = lx - s->p1;
        return imax(d1, -(isqrt(bx * bx + ly * ly) - s->p0));
    }
    case C_ELLIPSE: {
        // approximate: (G - ab) / mean(a, b), G = |(x b, y a)| (scaled by 2^-8 against overflow; x256 back)
        int64_t a = s->p0, b = s->p1, u = lx * b >> 8, v = ly * a >> 8;
        int64_t g = isqrt(u * u + v * v), ab = a * b >> 8;
        return (g - ab) * 512 / (a + b);
    }
    case C_STAR: {
        // nearest spike: the largest projection on the 5 tip directions; fold onto its upper half
        int64_t best = INT64_MIN, fx = 0, fy = 0;
        for (int k = 0; k < 5; k++) {
            int64_t c = icos(72 * k), sn = isin(72 * k);
            int64_t px = lx * c + ly * sn;
            if (px > best) best = px, fx = px, fy = -lx * sn + ly * c;
        }
        fx = ifloordiv(fx, 16384), fy = iabs(ifloordiv(fy, 16384));
        return ifloordiv(s->tnx * fx + s->tny * fy - s->tc14, 16384);
    }
    case C_STRIPES:
    case C_CHECKER:
        return s->region ? box_sd(lx, ly, R * 4 / 5) : isqrt(lx * lx + ly * ly) - R;
    }
    return INT64_MAX;
}

// stripes/checker: signed distance to the pattern's edge, negative on colour A
static int64_t pattern_sd(const shape *s, int64_t x, int64_t y) {
    int64_t lx, ly, P = s->p0, half = P / 2;
    to_local(s, x, y, &lx, &ly);
    int64_t mu = imod(lx + s->p1 * P / 65536, P);
    if (s->cls == C_STRIPES) return iabs(mu - half) - P / 4;
    int64_t mv = imod(ly + s->p1 * P / 131072, P);
    int64_t su = mu < half ? 1 : -1, sv = mv < half ? 1 : -1;
    int64_t du = imin(imod(mu, half), half - imod(mu, half)), dv = imin(imod(mv, half), half - imod(mv, half));
    int64_t dist = imin(du, dv);
    return su * sv > 0 ? -dist : dist;
}

// ---- drawing ------------------------------------------------------------------------------------
typedef struct rgb { int v[3]; } rgb;

static rgb rand_colour(bnl_rng *r) {
    rgb c;
    for (int k = 0; k < 3; k++) c.v[k] = rnd(r, 0, 255);
    return c;
}
static int colour_dist(rgb a, rgb b) {
    return abs(a.v[0] - b.v[0]) + abs(a.v[1] - b.v[1]) + abs(a.v[2] - b.v[2]);
}
// a colour at least min_dist (L1) from ref and ref2; after 8 draws, the best one
static int dist2(rgb c, rgb ref, rgb ref2) {
    int a = colour_dist(c, ref), b = colour_dist(c, ref2);
    return a < b ? a : b;
}
static rgb contrasting(bnl_rng *r, rgb ref, rgb ref2, int min_dist) {
    rgb best = rand_colour(r);
    for (int t = 0; t < 8 && dist2(best, ref, ref2) < min_dist; t++) {
        rgb c = rand_colour(r);
        if (dist2(c, ref, ref2) > dist2(best, ref, ref2)) best = c;
    }
    return best;
}

// coverage (Q8, 0..256) of a signed distance over a pixel of size ps
static int64_t coverage(int64_t d, int64_t ps) { return iclamp(128 - d * 256 / ps, 0, 256); }

static void blend(int *px, rgb c, int64_t a) {
    for (int k = 0; k < 3; k++) px[k] = (int)((px[k] * (256 - a) + c.v[k] * a) >> 8);
}

#define MAX_CLUTTER 4
typedef struct clutter {
    int kind;                    // 0 disk, 1 line (capsule)
    int64_t x0, y0, x1, y1, w;   // disk: center (x0, y0), radius w
    rgb col;
    int front;                   // drawn over the object
} clutter;

static int64_t clutter_sd(const clutter *c, int64_t x, int64_t y) {
    int64_t px = x - c->x0, py = y - c->y0;
    if (c->kind == 0) return isqrt(px * px + py * py) - c->w;
    int64_t bx = c->x1 - c->x0, by = c->y1 - c->y0;
    int64_t bb = bx * bx + by * by;
    int64_t h = bb > 0 ? iclamp((px * bx + py * by) * 4096 / bb, 0, 4096) : 0;   // Q12
    int64_t qx = px - bx * h / 4096, qy = py - by * h / 4096;
    return isqrt(qx * qx + qy * qy) - c->w;
}

static void draw(uint8_t *img, int S, uint64_t key, int cls) {
    bnl_rng r = bnl_rng_seed(key);
    const int64_t U = 65536, ps = U / S > 0 ? U / S : 1;

    // background: gradient between two colours, plus value noise on a 5x5 grid
    rgb bg0 = rand_colour(&r), bg1 = rand_colour(&r);
    int gdeg = rnd(&r, 0, 359);
    int64_t gc = icos(gdeg), gs = isin(gdeg);
    int gstrength = rnd(&r, 0, 256);   // how much of bg1 reaches the far side
    int namp = rnd(&r, 0, 50);
    int noise_grid[5][5][3];
    int chroma = rnd(&r, 0, 1);   // coloured or grey value noise
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            int g = rnd(&r, -namp, namp);
            for (int k = 0; k < 3; k++) noise_grid[i][j][k] = chroma ? rnd(&r, -namp, namp) : g;
        }

    // the object
    shape s;
    memset(&s, 0, sizeof s);
    s.cls = cls;
    s.r = U * rnd(&r, 26, 42) / 100;
    int64_t margin = s.r * 3 / 4;
    s.cx = rnd(&r, (int)margin, (int)(U - margin));
    s.cy = rnd(&r, (int)margin, (int)(U - margin));
    int deg = rnd(&r, 0, 359);
    s.ca = icos(deg), s.sa = isin(deg);
    s.mirror = rnd(&r, 0, 1);
    shape_setup(&s, &r);
    rgb bgmid;
    for (int k = 0; k < 3; k++) bgmid.v[k] = (bg0.v[k] * 2 + bg1.v[k]) / 3;
    rgb ca = contrasting(&r, bgmid, bgmid, rnd(&r, 110, 220));
    // the second colour (gradient end, border, pattern) stands out from both: a border must not
    // read as a hollow shape
    rgb cb = contrasting(&r, ca, bgmid, 120);
    int texture = rnd(&r, 0, 3);   // 0 solid, 1 gradient, 2 speckle, 3 border
    if (cls == C_STRIPES || cls == C_CHECKER) texture = rnd(&r, 0, 2) == 2 ? 2 : 0;
    int tdeg = rnd(&r, 0, 359);
    int64_t tc = icos(tdeg), ts = isin(tdeg);
    int64_t border = s.r * rnd(&r, 8, 15) / 100;
    int speckle = rnd(&r, 20, 60);

    // clutter: small disks and lines, mostly behind the object
    clutter cl[MAX_CLUTTER];
    int ncl = rnd(&r, 0, MAX_CLUTTER);
    for (int k = 0; k < ncl; k++) {
        clutter *c = &cl[k];
        c->kind = rnd(&r, 0, 1);
        c->x0 = rnd(&r, 0, (int)U), c->y0 = rnd(&r, 0, (int)U);
        if (c->kind == 0) {
            c->w = U * rnd(&r, 2, 7) / 100;
        } else {
            int a = rnd(&r, 0, 359);
            int64_t len = U * rnd(&r, 15, 55) / 100;
            c->x1 = c->x0 + icos(a) * len / 16384, c->y1 = c->y0 + isin(a) * len / 16384;
            c->w = imax(U * rnd(&r, 5, 20) / 1000, ps / 3);
        }
        c->col = rand_colour(&r);
        c->front = rnd(&r, 0, 9) < 1;
    }

    // global: colour cast, contrast, brightness, pixel noise
    int gain[3];
    for (int k = 0; k < 3; k++) gain[k] = rnd(&r, 210, 300);
    int contrast = rnd(&r, 150, 360), bright = rnd(&r, -40, 40), pnoise = rnd(&r, 0, 12);

    for (int y = 0; y < S; y++) {
        int64_t py = (int64_t)(2 * y + 1) * U / (2 * S);
        for (int x = 0; x < S; x++) {
            int64_t px = (int64_t)(2 * x + 1) * U / (2 * S);
            int v[3];
            // gradient position t in 0..256 along the direction, across the image
            int64_t t = ((px - U / 2) * gc + (py - U / 2) * gs) / 16384;   // about -46341..46341
            t = iclamp((t + 46341) * 256 / 92682, 0, 256) * gstrength / 256;
            int64_t gx = px * 4, gy = py * 4;   // value noise cell and fraction (Q8)
            int ix = (int)(gx >> 16), iy = (int)(gy >> 16);
            int64_t fx = (gx & 0xffff) >> 8, fy = (gy & 0xffff) >> 8;
            if (ix > 3) ix = 3, fx = 256;
            if (iy > 3) iy = 3, fy = 256;
            for (int k = 0; k < 3; k++) {
                int64_t n0 = noise_grid[iy][ix][k] * (256 - fx) + noise_grid[iy][ix + 1][k] * fx;
                int64_t n1 = noise_grid[iy + 1][ix][k] * (256 - fx) + noise_grid[iy + 1][ix + 1][k] * fx;
                int64_t n = (n0 * (256 - fy) + n1 * fy) >> 16;
                v[k] = (int)(bg0.v[k] + ((bg1.v[k] - bg0.v[k]) * t >> 8) + n);
            }
            for (int k = 0; k < ncl; k++)
                if (!cl[k].front) blend(v, cl[k].col, coverage(clutter_sd(&cl[k], px, py), ps));

            int64_t d = shape_sd(&s, px, py);
            int64_t a = coverage(d, ps);
            if (a > 0) {
                rgb oc = ca;
                uint64_t h = bnl_ds_mix(key ^ ((uint64_t)(y * S + x) << 20));
                if (cls == C_STRIPES || cls == C_CHECKER) {
                    int64_t pa = coverage(pattern_sd(&s, px, py), ps);
                    for (int k = 0; k < 3; k++) oc.v[k] = (int)((cb.v[k] * (256 - pa) + ca.v[k] * pa) >> 8);
                } else if (texture == 1) {
                    int64_t u = ((px - s.cx) * tc + (py - s.cy) * ts) / 16384;
                    int64_t tt = iclamp(128 + u * 128 / s.r, 0, 256);
                    for (int k = 0; k < 3; k++) oc.v[k] = (int)(ca.v[k] + ((cb.v[k] - ca.v[k]) * tt >> 8));
                } else if (texture == 3) {
                    int64_t ba = coverage(-d - border, ps);   // 256 deep inside, 0 on the border band
                    for (int k = 0; k < 3; k++) oc.v[k] = (int)((cb.v[k] * (256 - ba) + ca.v[k] * ba) >> 8);
                }
                if (texture == 2) {
                    int sp = (int)(h & 0xff) * 2 * speckle / 256 - speckle;
                    for (int k = 0; k < 3; k++) oc.v[k] += sp;
                }
                blend(v, oc, a);
            }
            for (int k = 0; k < ncl; k++)
                if (cl[k].front) blend(v, cl[k].col, coverage(clutter_sd(&cl[k], px, py), ps));

            uint64_t h2 = bnl_ds_mix(key + 0x51ED270B27ull * (uint64_t)(y * S + x + 1));
            uint8_t *o = img + ((size_t)y * S + x) * 3;
            for (int k = 0; k < 3; k++) {
                int64_t c = (int64_t)v[k] * gain[k] >> 8;
                c = ((c - 128) * contrast >> 8) + 128 + bright;
                if (pnoise) c += (int64_t)((h2 >> (16 * k)) & 0xffff) * (2 * pnoise + 1) / 65536 - pnoise;
                o[k] = (uint8_t)iclamp(c, 0, 255);
            }
        }
    }
}

// ---- the dataset --------------------------------------------------------------------------------
static int64_t proc_label(const bnl_dataset *d, size_t i) {
    const proc_impl *p = d->impl;
    return (int64_t)((i % (size_t)d->classes + (size_t)p->label_offset) % (size_t)d->classes);
}

static bnl_status proc_source(const bnl_dataset *d, size_t i, int need_short, bnl_ds_image *img, bnl_ds_scratch *s) {
    const proc_impl *p = d->impl;
    int S = p->size;
    uint8_t *buf = bnl_ds_scratch_u8(s, (size_t)S * S * 3);
    if (!buf) return BNL_ERR_NOMEM;
    draw(buf, S, bnl_ds_key(p->seed, i), (int)proc_label(d, i));
    img->pix = buf, img->h = S, img->w = S;
    return BNL_OK;
}

static void proc_destroy(void *impl) { bnl_free(impl); }

static const bnl_ds_ops k_proc_ops = {proc_source, proc_label, proc_destroy};

bnl_procedural_opts bnl_procedural_opts_default(void) {
    bnl_procedural_opts o;
    memset(&o, 0, sizeof o);
    o.seed = 0, o.count = 10000, o.classes = 10, o.size = 32;
    return o;
}

bnl_status bnl_dataset_procedural(bnl_dataset **out, const bnl_procedural_opts *o) {
    if (!out) return bnl_fail(BNL_ERR_ARG, "dataset_procedural: out is NULL");
    *out = NULL;
    bnl_procedural_opts opt = o ? *o : bnl_procedural_opts_default();
    if (opt.classes == 0) opt.classes = 10;
    if (opt.size == 0) opt.size = 32;
    if (opt.classes < 2 || opt.classes > BNL_PROCEDURAL_MAX_CLASSES)
        return bnl_fail(BNL_ERR_ARG, "dataset_procedural: classes = %d, expected 2..%d", opt.classes,
                        BNL_PROCEDURAL_MAX_CLASSES);
    if (opt.size < 8 || opt.size > 4096)
        return bnl_fail(BNL_ERR_ARG, "dataset_procedural: size = %d, expected 8..4096", opt.size);
    if (opt.count == 0) return bnl_fail(BNL_ERR_ARG, "dataset_procedural: count is 0");
    bnl_dataset *d = bnl_ds_new(opt.classes);
    if (!d) return BNL_ERR_NOMEM;
    proc_impl *p = bnl_calloc(1, sizeof *p);
    if (!p) {
        bnl_dataset_free(d);
        return bnl_fail(BNL_ERR_NOMEM, "dataset_procedural: out of memory");
    }
    p->seed = opt.seed, p->size = opt.size;
    p->label_offset = (int)(bnl_ds_key(opt.seed, 0x4C4142454Cull) % (uint64_t)opt.classes);
    d->ops = &k_proc_ops, d->impl = p;
    for (int c = 0; c < opt.classes; c++) {
        d->names[c] = bnl_ds_strdup(k_names[c]);
        if (!d->names[c]) {
            bnl_dataset_free(d);
            return bnl_fail(BNL_ERR_NOMEM, "dataset_procedural: out of memory");
        }
    }
    d->count = opt.count, d->H = d->W = d->resize = opt.size;
    // statistics of the images (measured over 500 images at 32x32, 10 classes)
    bnl_augment a = bnl_augment_none();
    const float mean[3] = {0.504f, 0.501f, 0.489f}, sd[3] = {0.265f, 0.262f, 0.264f};
    for (int c = 0; c < 3; c++) a.mean[c] = mean[c], a.std[c] = sd[c];
    d->eval_aug = a;
    a.pad_crop = opt.size / 8, a.flip = 1;
    d->train_aug = a;
    *out = d;
    return BNL_OK;
}
