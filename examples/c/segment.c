/* Segment a DICOM series through fmseg's C ABI and write the mask as raw bytes.
 *
 *   cargo build --release
 *   cc -O2 examples/c/segment.c -I include -L target/release -lfmseg -o segment-dicom
 *   LD_LIBRARY_PATH=target/release ./segment-dicom weights/fmseg-unet25d.fmw study/series-3 mask.raw
 *
 * The mask holds one byte per voxel (1 = fat metaplasia), column fastest, then row, then
 * slice, on the series' own grid: the layout of fmseg.h's preamble. Options: --threads N,
 * --no-warm-up (start faster; the first series then pays the warm-up). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmseg.h"

static int fail(const char *what, FmsegStatus s) {
    fprintf(stderr, "segment: %s failed (status %d): %s\n", what, (int)s, fmseg_last_error());
    return 1;
}

/* The message belongs to the failed call: print it before freeing the engine (the next
 * fmseg call on this thread replaces it). */
static int fail_and_free(const char *what, FmsegStatus s, FmsegEngine *engine) {
    fail(what, s);
    fmseg_engine_free(engine);
    return 1;
}

int main(int argc, char **argv) {
    FmsegOptions options;
    fmseg_options_init(&options);
    const char *pos[3];
    int npos = 0;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--threads") == 0 && a + 1 < argc) {
            options.threads = (uint32_t)atoi(argv[++a]);
        } else if (strcmp(argv[a], "--no-warm-up") == 0) {
            options.warm_up = 0;
        } else if (npos < 3) {
            pos[npos++] = argv[a];
        } else {
            npos = 4;
        }
    }
    if (npos != 3) {
        fprintf(stderr, "usage: segment [--threads N] [--no-warm-up] WEIGHTS DICOM_SERIES MASK_OUT\n");
        return 2;
    }
    if (fmseg_abi_version() != FMSEG_ABI_VERSION) {
        fprintf(stderr, "segment: libfmseg has ABI %u, fmseg.h describes %d\n", fmseg_abi_version(), FMSEG_ABI_VERSION);
        return 1;
    }

    FmsegEngine *engine = NULL;
    FmsegStatus s = fmseg_engine_create(pos[0], &options, &engine);
    if (s != FMSEG_OK) return fail("fmseg_engine_create", s);
    char device[128];
    fmseg_engine_device(engine, device, sizeof device);
    printf("fmseg %s on %s\n", fmseg_version(), device);

    /* Ask for the size first (no buffer), then segment into a buffer that fits. */
    size_t dims[3];
    double affine[16];
    s = fmseg_segment_dicom(engine, pos[1], NULL, 0, dims, affine);
    if (s != FMSEG_ERROR_BUFFER_TOO_SMALL) return fail_and_free("fmseg_segment_dicom (size query)", s, engine);
    size_t n = dims[0] * dims[1] * dims[2];
    uint8_t *mask = malloc(n);
    if (!mask) {
        fmseg_engine_free(engine);
        fprintf(stderr, "segment: out of memory for a %zu-byte mask\n", n);
        return 1;
    }
    s = fmseg_segment_dicom(engine, pos[1], mask, n, dims, affine);
    if (s != FMSEG_OK) {
        free(mask);
        return fail_and_free("fmseg_segment_dicom", s, engine);
    }

    FmsegFindings f;
    FmsegTimings t;
    fmseg_last_findings(engine, &f);
    fmseg_last_timings(engine, &t);
    printf("%zu x %zu x %zu voxels: %zu FM voxels, %.2f ml (left %.2f, right %.2f), %zu lesion(s)\n", dims[0],
           dims[1], dims[2], f.fm_voxels, f.fm_volume_ml, f.left_ml, f.right_ml, f.lesion_count);
    printf("%.3f s: preprocess %.3f, network %.3f, windows %.3f, postprocess %.3f, report %.3f\n", t.total_s,
           t.preprocess_s, t.network_s, t.windows_s, t.postprocess_s, t.report_s);

    int rc = 0;
    FILE *out = fopen(pos[2], "wb");
    if (!out || fwrite(mask, 1, n, out) != n || fclose(out) != 0) {
        fprintf(stderr, "segment: cannot write %s\n", pos[2]);
        rc = 1;
    }
    free(mask);
    s = fmseg_engine_free(engine);
    if (s != FMSEG_OK) return fail("fmseg_engine_free", s);
    return rc;
}
