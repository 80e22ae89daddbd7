// Writes the valid part of the committed seed corpus (tests/fuzz/corpus/<target>/), every file a
// few KB at most: tiny ResNets and tensor files of every dtype (fuzz_safetensors), CIFAR records and
// procedural options (fuzz_dataset), PNG and JPEG images of every colour type the decoders convert
// (fuzz_image), and command lines (fuzz_cli). The malformed safetensors seeds come from
// tests/make_malformed.py run on the tiny ResNet (tests/fuzz/run.sh --make-corpus does both).
// usage: make_corpus OUT_DIR   (built by -DBNL_FUZZ=ON; output is deterministic)
#include "bnlab.h"
#include "io/safetensors.h"
#include "io/statedict.h"
#include "model/resnet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef BNL_HAVE_JPEG
#include <jpeglib.h>
#endif
#ifdef BNL_HAVE_PNG
#include <png.h>
#endif

static const char *out_dir;

static void put(const char *target, const char *name, const void *data, size_t len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", out_dir, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f)) {
        perror(path);
        exit(1);
    }
}

static void must(bnl_status s, const char *what) {
    if (s != BNL_OK) {
        fprintf(stderr, "make_corpus: %s: %s\n", what, bnl_last_error());
        exit(1);
    }
}

// ---- safetensors ------------------------------------------------------------------------------

static void tiny_resnet(const char *name, int bottleneck, int stages, int width, int classes) {
    bnl_resnet_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.num_stages = stages, sp.bottleneck = bottleneck, sp.stem_width = width, sp.in_channels = 3;
    sp.num_classes = classes;
    for (int i = 0; i < stages; i++) sp.blocks[i] = 1, sp.inner_widths[i] = width * (1 << i);
    bnl_resnet *m;
    must(bnl_resnet_create(&m, &sp, 7), "create");
    uint8_t *buf;
    size_t len;
    must(bnl_resnet_save(m, &buf, &len), "save");
    put("fuzz_safetensors", name, buf, len);
    free(buf);
    bnl_resnet_free(m);
}

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static void dtypes_file(void) {
    bnl_st_writer *w;
    must(bnl_st_writer_create(&w), "writer");
    float f32[3] = {1.5f, -2.0f, 0.25f};
    double f64[2] = {1e300, -0.0};
    uint16_t f16[2] = {0x3C00, 0x7C00}, bf16[2] = {to_bf16(3.0f), 0xFFC1};   // 1, inf; 3, nan
    int64_t i64[2] = {INT64_MIN, 5};
    int32_t i32[2] = {-7, 1 << 30};
    int16_t i16[1] = {-300};
    int8_t i8[2] = {-128, 127};
    uint8_t u8[3] = {0, 200, 255}, b[2] = {0, 1};
    int64_t s1[1] = {3}, s2[1] = {2}, s3[2] = {1, 2}, s0[1] = {0}, s4[1] = {1}, s5[2] = {3, 1};
    must(bnl_st_writer_add(w, "f32", BNL_DT_F32, 1, s1, f32), "add");
    must(bnl_st_writer_add(w, "f64", BNL_DT_F64, 2, s3, f64), "add");
    must(bnl_st_writer_add(w, "f16", BNL_DT_F16, 1, s2, f16), "add");
    must(bnl_st_writer_add(w, "bf16", BNL_DT_BF16, 1, s2, bf16), "add");
    must(bnl_st_writer_add(w, "i64", BNL_DT_I64, 1, s2, i64), "add");
    must(bnl_st_writer_add(w, "i32", BNL_DT_I32, 1, s2, i32), "add");
    must(bnl_st_writer_add(w, "i16", BNL_DT_I16, 1, s4, i16), "add");
    must(bnl_st_writer_add(w, "i8", BNL_DT_I8, 1, s2, i8), "add");
    must(bnl_st_writer_add(w, "u8", BNL_DT_U8, 2, s5, u8), "add");
    must(bnl_st_writer_add(w, "bool", BNL_DT_BOOL, 1, s2, b), "add");
    must(bnl_st_writer_add(w, "empty", BNL_DT_F32, 1, s0, f32), "add");
    must(bnl_st_writer_add(w, "scalar", BNL_DT_I64, 0, NULL, i64), "add");
    must(bnl_st_writer_meta(w, "labels", "[\"a\", \"b\\\"c\", \"\\u00e9\"]"), "meta");
    must(bnl_st_writer_meta(w, "format", "pt"), "meta");
    uint8_t *buf;
    size_t len;
    must(bnl_st_writer_to_buffer(w, &buf, &len), "to_buffer");
    put("fuzz_safetensors", "dtypes.safetensors", buf, len);
    free(buf);
    bnl_st_writer_free(w);
    static const char empty[] = "\x02\0\0\0\0\0\0\0{}";
    put("fuzz_safetensors", "empty_header.safetensors", empty, 10);
    static const char esc[] = "{\"a\\u0041\\n\\\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                              "\"__metadata__\":{\"k\":\"\\ud83d\\ude00 v\"}}";
    uint8_t e[256];
    uint64_t n = sizeof esc - 1;
    memcpy(e, &n, 8), memcpy(e + 8, esc, n), e[8 + n] = 42;
    put("fuzz_safetensors", "escapes.safetensors", e, 8 + n + 1);
}

// ---- datasets ---------------------------------------------------------------------------------

static void datasets(void) {
    static uint8_t buf[1 + 2 * 3073 + 200];
    // mode 0: two CIFAR records from a buffer (labels 3 and 9), then batch options
    buf[0] = 0;
    for (int r = 0; r < 2; r++) {
        uint8_t *rec = buf + 1 + r * 3073;
        rec[0] = r ? 9 : 3;
        for (int i = 0; i < 3072; i++) rec[1 + i] = (uint8_t)(i * (r + 3) + (i >> 10) * 80);
    }
    put("fuzz_dataset", "cifar_buffer_2", buf, 1 + 2 * 3073);
    put("fuzz_dataset", "cifar_buffer_1_truncated", buf, 1 + 3073 + 100);
    // mode 1: a directory with batches.meta.txt and test_batch.bin (one record); 130 = train split
    static const char meta[] = "a\nb\r\nc\n\nd\ne\nf\ng\nh\ni\nj  \n";
    size_t nm = sizeof meta - 1;
    for (int train = 0; train < 2; train++) {
        uint8_t *p = buf;
        *p++ = train ? 130 : 1;
        *p++ = (uint8_t)nm;
        memcpy(p, meta, nm), p += nm;
        p[0] = 5;
        for (int i = 0; i < 3072; i++) p[1 + i] = (uint8_t)(i ^ (i >> 5));
        p += 3073;
        put("fuzz_dataset", train ? "cifar_dir_train" : "cifar_dir_test", buf, (size_t)(p - buf));
    }
    // mode 2: procedural options (seed 8 bytes, count 2, classes 1, size 1), then batch bytes
    static const uint8_t proc[][19] = {
        {2, 1, 0, 0, 0, 0, 0, 0, 0, 100, 0, 10, 32, 7, 0, 9, 0, 1, 0},
        {2, 0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0, 3, 0, 16, 8, 2, 0, 1, 0, 0xff, 0xff},
        {5, 9, 9, 9, 9, 9, 9, 9, 9, 0xff, 0xff, 2, 39, 0, 0, 0, 0, 0x81, 0x40},
        {2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof proc / sizeof proc[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "procedural_%zu", i);
        put("fuzz_dataset", name, proc[i], sizeof proc[i]);
    }
}

// ---- images -----------------------------------------------------------------------------------

static uint8_t *mem_buf;
static size_t mem_len, mem_cap;

static void mem_put(const void *p, size_t n) {
    if (mem_len + n > mem_cap) {
        mem_cap = (mem_len + n) * 2;
        mem_buf = realloc(mem_buf, mem_cap);
    }
    memcpy(mem_buf + mem_len, p, n);
    mem_len += n;
}

#ifdef BNL_HAVE_PNG
static void png_mem_write(png_structp p, png_bytep d, size_t n) { (void)p, mem_put(d, n); }
static void png_mem_flush(png_structp p) { (void)p; }

static void png_file(const char *name, int w, int h, int color, int depth, int interlace, int trns) {
    mem_len = 0;
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    if (setjmp(png_jmpbuf(p))) {
        fprintf(stderr, "make_corpus: libpng failed on %s\n", name);
        exit(1);
    }
    png_set_write_fn(p, NULL, png_mem_write, png_mem_flush);
    png_set_IHDR(p, info, (png_uint_32)w, (png_uint_32)h, depth, color,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {9, 9, 9}};
        png_set_PLTE(p, info, pal, 4);
    }
    if (trns) {   // transparency without an alpha channel: per palette entry, or one colour
        png_byte alpha[2] = {0, 128};
        png_color_16 key = {0, 1, 2, 3, 5};
        png_set_tRNS(p, info, alpha, color == PNG_COLOR_TYPE_PALETTE ? 2 : 0, &key);
    }
    png_write_info(p, info);
    int ch = color == PNG_COLOR_TYPE_RGB ? 3 : color == PNG_COLOR_TYPE_RGBA ? 4 : color == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
    size_t rowbytes = ((size_t)w * ch * depth + 7) / 8;
    uint8_t *row = calloc(rowbytes, 1);
    int passes = png_set_interlace_handling(p);
    for (int pass = 0; pass < passes; pass++)
        for (int y = 0; y < h; y++) {
            for (size_t i = 0; i < rowbytes; i++) row[i] = (uint8_t)(color == PNG_COLOR_TYPE_PALETTE ? (depth == 8 ? (i + y) % 4 : (i * 7 + y * 3) & 0x55) : i * 29 + y * 11);
            png_write_row(p, row);
        }
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    free(row);
    put("fuzz_image", name, mem_buf, mem_len);
}
#endif

#ifdef BNL_HAVE_JPEG
static void jpeg_file(const char *name, int w, int h, int comps, J_COLOR_SPACE cs, int progressive, int restart,
                      int quality) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    unsigned char *out = NULL;
    unsigned long len = 0;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &out, &len);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h, c.input_components = comps, c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    c.restart_interval = (unsigned)restart;
    jpeg_start_compress(&c, TRUE);
    uint8_t *row = malloc((size_t)w * comps);
    while (c.next_scanline < c.image_height) {
        for (int i = 0; i < w * comps; i++) row[i] = (uint8_t)(i * 23 + c.next_scanline * 9);
        JSAMPROW rp = row;
        jpeg_write_scanlines(&c, &rp, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    put("fuzz_image", name, out, len);
    free(out), free(row);
}
#endif

static void images(void) {
#ifdef BNL_HAVE_PNG
    png_file("rgb_5x3.png", 5, 3, PNG_COLOR_TYPE_RGB, 8, 0, 0);
    png_file("rgba16_4x4.png", 4, 4, PNG_COLOR_TYPE_RGBA, 16, 0, 0);
    png_file("gray1_9x2.png", 9, 2, PNG_COLOR_TYPE_GRAY, 1, 0, 0);
    png_file("gray_alpha_3x3.png", 3, 3, PNG_COLOR_TYPE_GRAY_ALPHA, 8, 0, 0);
    png_file("palette2_6x5.png", 6, 5, PNG_COLOR_TYPE_PALETTE, 2, 0, 0);
    png_file("interlaced_rgb_11x9.png", 11, 9, PNG_COLOR_TYPE_RGB, 8, 1, 0);
    png_file("palette_trns_7x3.png", 7, 3, PNG_COLOR_TYPE_PALETTE, 8, 0, 1);
    png_file("gray_trns_5x5.png", 5, 5, PNG_COLOR_TYPE_GRAY, 4, 0, 1);
    png_file("rgb16_trns_3x4.png", 3, 4, PNG_COLOR_TYPE_RGB, 16, 0, 1);
#endif
#ifdef BNL_HAVE_JPEG
    jpeg_file("rgb_9x7.jpg", 9, 7, 3, JCS_RGB, 0, 0, 75);
    jpeg_file("gray_8x8.jpg", 8, 8, 1, JCS_GRAYSCALE, 0, 0, 50);
    jpeg_file("progressive_16x12.jpg", 16, 12, 3, JCS_RGB, 1, 0, 60);
    jpeg_file("cmyk_6x6.jpg", 6, 6, 4, JCS_CMYK, 0, 0, 80);
    jpeg_file("restart_40x24.jpg", 40, 24, 3, JCS_RGB, 0, 1, 30);   // 40x24: decoded at 1/2 scale for size 8
#endif
    put("fuzz_image", "not_an_image.png", "GIF89a\1\0\1\0", 10);
}

// ---- command lines ----------------------------------------------------------------------------

static void cli_line(const char *name, const char *line) {
    // arguments separated by newlines (the target also splits at NUL bytes)
    put("fuzz_cli", name, line, strlen(line));
}

static void command_lines(void) {
    cli_line("help", "--help");
    cli_line("basic", "--out\nruns/a\n--epochs\n3\n--batch-size=16\n--lr\n0.05");
    cli_line("everything",
             "--data=procedural\n--classes\n4\n--image-size\n16\n--train-size\n48\n--val-size\n0\n--data-seed\n7\n"
             "--arch\nresnet34\n--width-mult\n0.125\n--epochs\n2\n--batch-size\n8\n--lr\n1e-1\n--sgd-momentum\n0.9\n"
             "--weight-decay\n5e-4\n--no-decay-bn-bias\n--schedule\nstep\n--step-epochs\n1,2,5\n--step-gamma\n0.5\n"
             "--warmup-epochs\n0.5\n--bn-momentum\n0.99\n--running-var\nunbiased\n--no-augment\n--threads\n2\n"
             "--seed\n18446744073709551615\n--out\nx\n--resume\n--eval-every\n0\n--max-steps\n5\n--quiet");
    cli_line("errors", "--epochs\n-1\n--lr\nnan\n--out=\n--arch\nresnet19\n--step-epochs\n5,3");
    cli_line("init", "--init\nw.safetensors\n--width-mult\n2\n--out\no\n--sync-bn\n--augment\n--no-augment");
    cli_line("generic", "--name\nv\n--n\n-1000\n--x=1e308\n--flag\n--step-epochs\n1,2,3,4,5,6,7,8,9,10,11,12,13,14,"
                        "15,16,17\nresnet50\n18446744073709551616\n--");
    cli_line("unknown", "--nope=1\n-x\n--flag=1\n--name");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: make_corpus OUT_DIR\n");
        return 2;
    }
    out_dir = argv[1];
    mkdir(out_dir, 0755);
    tiny_resnet("resnet_basic_1stage.safetensors", 0, 1, 2, 2);   // the base of the malformed seeds
    tiny_resnet("resnet_bottleneck_2stages.safetensors", 1, 2, 1, 3);
    tiny_resnet("resnet_basic_2stages.safetensors", 0, 2, 2, 2);
    dtypes_file();
    datasets();
    images();
    command_lines();
    free(mem_buf);
    return 0;
}
