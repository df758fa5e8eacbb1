/* A program written against include/fmseg.h alone (nothing else from the repository), run by
 * tests/embed_c.rs, also under valgrind.
 *
 *   volume_abi segment WEIGHTS VOLUME MASK_OUT [THREADS]
 *       VOLUME.txt holds "cols rows slices" and the 16 numbers of the LPS affine (row-major),
 *       VOLUME.f32 the voxels as little-endian float32, column fastest. Segments the volume
 *       with fmseg_segment_volume and writes the mask (one byte per voxel, same layout).
 *   volume_abi errors WEIGHTS
 *       Feeds every kind of bad argument to the ABI and checks each status and message;
 *       prints one line per case and exits 1 if any case is answered wrongly. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmseg.h"

static int failures = 0;

/* One case: `got` must be `want`, and a failure must leave a message naming the function. */
static void expect(const char *what, FmsegStatus got, FmsegStatus want, const char *function) {
    const char *msg = fmseg_last_error();
    int ok = got == want && msg != NULL;
    if (ok && want != FMSEG_OK) ok = strstr(msg, function) != NULL && strlen(msg) > strlen(function) + 2;
    if (ok && want == FMSEG_OK) ok = msg[0] == '\0';
    printf("%s: %s: status %d (want %d): %s\n", ok ? "ok" : "WRONG", what, (int)got, (int)want, msg ? msg : "(NULL)");
    if (!ok) failures++;
}

static int run_segment(const char *weights, const char *volume, const char *mask_out, uint32_t threads) {
    char path[4096];
    size_t dims[3];
    double affine[16];
    snprintf(path, sizeof path, "%s.txt", volume);
    FILE *f = fopen(path, "r");
    if (!f || fscanf(f, "%zu %zu %zu", &dims[0], &dims[1], &dims[2]) != 3) {
        fprintf(stderr, "volume_abi: cannot read dims from %s\n", path);
        return 1;
    }
    for (int i = 0; i < 16; i++) {
        if (fscanf(f, "%lf", &affine[i]) != 1) {
            fprintf(stderr, "volume_abi: cannot read the affine from %s\n", path);
            return 1;
        }
    }
    fclose(f);
    size_t n = dims[0] * dims[1] * dims[2];
    float *voxels = malloc(n * sizeof(float));
    uint8_t *mask = malloc(n);
    snprintf(path, sizeof path, "%s.f32", volume);
    f = fopen(path, "rb");
    if (!voxels || !mask || !f || fread(voxels, sizeof(float), n, f) != n) {
        fprintf(stderr, "volume_abi: cannot read %zu voxels from %s\n", n, path);
        return 1;
    }
    fclose(f);

    FmsegOptions options;
    fmseg_options_init(&options);
    options.device = FMSEG_DEVICE_CPU;
    options.threads = threads;
    options.warm_up = 0;
    FmsegEngine *engine = NULL;
    FmsegStatus s = fmseg_engine_create(weights, &options, &engine);
    if (s == FMSEG_OK) s = fmseg_segment_volume(engine, voxels, dims, affine, mask, n);
    if (s != FMSEG_OK) {
        fprintf(stderr, "volume_abi: status %d: %s\n", (int)s, fmseg_last_error());
        return 1;
    }
    FmsegFindings found;
    fmseg_last_findings(engine, &found);
    printf("%zu FM voxels, %.3f ml\n", found.fm_voxels, found.fm_volume_ml);
    f = fopen(mask_out, "wb");
    if (!f || fwrite(mask, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "volume_abi: cannot write %s\n", mask_out);
        return 1;
    }
    free(voxels);
    free(mask);
    return fmseg_engine_free(engine) == FMSEG_OK ? 0 : 1;
}

static int run_errors(const char *weights, const char *not_weights) {
    FmsegEngine *engine = NULL;
    FmsegOptions options;

    expect("ABI version", fmseg_abi_version() == FMSEG_ABI_VERSION ? FMSEG_OK : FMSEG_ERROR_INVALID_ARGUMENT,
           FMSEG_OK, "");
    expect("options NULL", fmseg_options_init(NULL), FMSEG_ERROR_NULL_ARGUMENT, "fmseg_options_init");
    expect("options", fmseg_options_init(&options), FMSEG_OK, "");
    options.device = FMSEG_DEVICE_CPU;
    options.threads = 1;
    options.warm_up = 0;
    expect("weights path NULL", fmseg_engine_create(NULL, &options, &engine), FMSEG_ERROR_NULL_ARGUMENT,
           "fmseg_engine_create");
    expect("engine destination NULL", fmseg_engine_create(weights, &options, NULL), FMSEG_ERROR_NULL_ARGUMENT,
           "fmseg_engine_create");
    expect("weights missing", fmseg_engine_create("/nonexistent/fmseg.fmw", &options, &engine),
           FMSEG_ERROR_WEIGHTS, "fmseg_engine_create");
    expect("weights unreadable (not a weights file)", fmseg_engine_create(not_weights, &options, &engine),
           FMSEG_ERROR_WEIGHTS, "fmseg_engine_create");
    FmsegOptions bad = options;
    bad.device = 7;
    expect("device out of range", fmseg_engine_create(weights, &bad, &engine), FMSEG_ERROR_INVALID_ARGUMENT,
           "fmseg_engine_create");
    bad = options;
    bad.plan_dims[1] = 0;
    expect("plan dims 0", fmseg_engine_create(weights, &bad, &engine), FMSEG_ERROR_INVALID_ARGUMENT,
           "fmseg_engine_create");
    bad = options;
    bad.plan_spacing_mm[2] = NAN;
    expect("plan spacing NaN", fmseg_engine_create(weights, &bad, &engine), FMSEG_ERROR_INVALID_ARGUMENT,
           "fmseg_engine_create");
    if (engine != NULL) {
        printf("WRONG: a failed create wrote a handle\n");
        failures++;
    }

    expect("create", fmseg_engine_create(weights, &options, &engine), FMSEG_OK, "");
    if (failures) return 1;

    enum { C = 24, R = 20, S = 6, N = C * R * S };
    static float voxels[N];
    static uint8_t mask[N];
    for (int i = 0; i < N; i++) voxels[i] = (float)(100 + (i * 37) % 251);
    size_t dims[3] = {C, R, S};
    double affine[16] = {1.6, 0, 0, -20, 0, 1.6, 0, -16, 0, 0, 3.5, 10, 0, 0, 0, 1};

    expect("engine NULL", fmseg_segment_volume(NULL, voxels, dims, affine, mask, N), FMSEG_ERROR_NULL_ARGUMENT,
           "fmseg_segment_volume");
    expect("engine never created", fmseg_segment_volume((FmsegEngine *)(uintptr_t)0x1234, voxels, dims, affine, mask, N),
           FMSEG_ERROR_INVALID_HANDLE, "fmseg_segment_volume");
    expect("voxels NULL", fmseg_segment_volume(engine, NULL, dims, affine, mask, N), FMSEG_ERROR_NULL_ARGUMENT,
           "fmseg_segment_volume");
    expect("dims NULL", fmseg_segment_volume(engine, voxels, NULL, affine, mask, N), FMSEG_ERROR_NULL_ARGUMENT,
           "fmseg_segment_volume");
    expect("affine NULL", fmseg_segment_volume(engine, voxels, dims, NULL, mask, N), FMSEG_ERROR_NULL_ARGUMENT,
           "fmseg_segment_volume");
    expect("mask NULL", fmseg_segment_volume(engine, voxels, dims, affine, NULL, N), FMSEG_ERROR_NULL_ARGUMENT,
           "fmseg_segment_volume");
    size_t zero[3] = {C, 0, S};
    expect("a dim of 0", fmseg_segment_volume(engine, voxels, zero, affine, mask, N), FMSEG_ERROR_INVALID_ARGUMENT,
           "fmseg_segment_volume");
    size_t huge[3] = {SIZE_MAX / 2, 4, 4};
    expect("dims whose product overflows", fmseg_segment_volume(engine, voxels, huge, affine, mask, N),
           FMSEG_ERROR_INVALID_ARGUMENT, "fmseg_segment_volume");
    size_t flat[3] = {C, R, 1};
    expect("one slice (2-D)", fmseg_segment_volume(engine, voxels, flat, affine, mask, N), FMSEG_ERROR_BAD_INPUT,
           "fmseg_segment_volume");
    expect("mask buffer too small", fmseg_segment_volume(engine, voxels, dims, affine, mask, N - 1),
           FMSEG_ERROR_BUFFER_TOO_SMALL, "fmseg_segment_volume");
    double singular[16] = {1.6, 3.2, 0, 0, 0, 0, 0, 0, 0, 0, 3.5, 0, 0, 0, 0, 1};
    expect("affine not invertible", fmseg_segment_volume(engine, voxels, dims, singular, mask, N),
           FMSEG_ERROR_INVALID_ARGUMENT, "fmseg_segment_volume");
    double nan_affine[16];
    memcpy(nan_affine, affine, sizeof affine);
    nan_affine[5] = NAN;
    expect("affine with NaN", fmseg_segment_volume(engine, voxels, dims, nan_affine, mask, N),
           FMSEG_ERROR_INVALID_ARGUMENT, "fmseg_segment_volume");
    double projective[16];
    memcpy(projective, affine, sizeof affine);
    projective[14] = 0.5;
    expect("affine last row not 0 0 0 1", fmseg_segment_volume(engine, voxels, dims, projective, mask, N),
           FMSEG_ERROR_INVALID_ARGUMENT, "fmseg_segment_volume");
    voxels[N / 2] = NAN;
    expect("a NaN voxel", fmseg_segment_volume(engine, voxels, dims, affine, mask, N), FMSEG_ERROR_BAD_INPUT,
           "fmseg_segment_volume");
    voxels[N / 2] = INFINITY;
    expect("an infinite voxel", fmseg_segment_volume(engine, voxels, dims, affine, mask, N), FMSEG_ERROR_BAD_INPUT,
           "fmseg_segment_volume");
    for (int i = 0; i < N; i++) voxels[i] = 5.0f;
    expect("a constant image", fmseg_segment_volume(engine, voxels, dims, affine, mask, N), FMSEG_ERROR_BAD_INPUT,
           "fmseg_segment_volume");

    size_t got[3] = {0, 0, 0};
    expect("DICOM path NULL", fmseg_segment_dicom(engine, NULL, mask, N, got, NULL), FMSEG_ERROR_NULL_ARGUMENT,
           "fmseg_segment_dicom");
    expect("DICOM path missing", fmseg_segment_dicom(engine, "/nonexistent/series", mask, N, got, NULL),
           FMSEG_ERROR_IO, "fmseg_segment_dicom");
    expect("not DICOM", fmseg_segment_dicom(engine, not_weights, mask, N, got, NULL), FMSEG_ERROR_BAD_INPUT,
           "fmseg_segment_dicom");

    FmsegTimings t;
    expect("timings out NULL", fmseg_last_timings(engine, NULL), FMSEG_ERROR_NULL_ARGUMENT, "fmseg_last_timings");
    expect("timings before any call", fmseg_last_timings(engine, &t), FMSEG_OK, "");
    if (t.total_s != 0.0) {
        printf("WRONG: timings before any successful call are not zero\n");
        failures++;
    }
    expect("findings out NULL", fmseg_last_findings(engine, NULL), FMSEG_ERROR_NULL_ARGUMENT, "fmseg_last_findings");
    char small[4];
    expect("device name, truncated", fmseg_engine_device(engine, small, sizeof small), FMSEG_OK, "");
    if (strlen(small) != 3) {
        printf("WRONG: the device name was not truncated to 3 characters + NUL\n");
        failures++;
    }
    expect("device buffer NULL", fmseg_engine_device(engine, NULL, 8), FMSEG_ERROR_NULL_ARGUMENT,
           "fmseg_engine_device");

    expect("free", fmseg_engine_free(engine), FMSEG_OK, "");
    expect("free again", fmseg_engine_free(engine), FMSEG_ERROR_INVALID_HANDLE, "fmseg_engine_free");
    expect("segment with a freed engine", fmseg_segment_volume(engine, voxels, dims, affine, mask, N),
           FMSEG_ERROR_INVALID_HANDLE, "fmseg_segment_volume");
    expect("timings of a freed engine", fmseg_last_timings(engine, &t), FMSEG_ERROR_INVALID_HANDLE,
           "fmseg_last_timings");
    expect("free NULL", fmseg_engine_free(NULL), FMSEG_OK, "");
    printf("%d wrong\n", failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc >= 5 && strcmp(argv[1], "segment") == 0)
        return run_segment(argv[2], argv[3], argv[4], argc > 5 ? (uint32_t)atoi(argv[5]) : 0);
    if (argc == 3 && strcmp(argv[1], "errors") == 0) return run_errors(argv[2], argv[0]);
    fprintf(stderr, "usage: volume_abi segment WEIGHTS VOLUME MASK_OUT [THREADS] | volume_abi errors WEIGHTS\n");
    return 2;
}
