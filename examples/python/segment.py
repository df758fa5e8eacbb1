"""Segment a DICOM series through fmseg's C ABI from Python: ctypes only, nothing to install.

    cargo build --release
    python3 examples/python/segment.py target/release/libfmseg.so weights/fmseg-unet25d.fmw SERIES_DIR MASK_OUT [--threads N] [--no-warm-up]

The mask is written as one byte per voxel (1 = fat metaplasia), column fastest, then row, then
slice: the layout of include/fmseg.h.
"""
import ctypes as C
import sys

OK, BUFFER_TOO_SMALL = 0, 4


class Options(C.Structure):
    _fields_ = [("device", C.c_uint32), ("threads", C.c_uint32), ("tta", C.c_uint32), ("tta_seed", C.c_uint64),
                ("warm_up", C.c_uint32), ("plan_dims", C.c_size_t * 3), ("plan_spacing_mm", C.c_double * 3)]


class Findings(C.Structure):
    _fields_ = [("fm_voxels", C.c_size_t), ("fm_volume_ml", C.c_double), ("left_ml", C.c_double),
                ("right_ml", C.c_double), ("lesion_count", C.c_size_t)]


args = [a for a in sys.argv[1:] if not a.startswith("--")]
lib_path, weights, series, mask_out = args[:4]
lib = C.CDLL(lib_path)
# Every signature, so that ctypes passes size_t and pointers at their full width.
lib.fmseg_abi_version.restype = C.c_uint32
lib.fmseg_version.restype = C.c_char_p
lib.fmseg_last_error.restype = C.c_char_p
lib.fmseg_options_init.argtypes = [C.POINTER(Options)]
lib.fmseg_engine_create.argtypes = [C.c_char_p, C.POINTER(Options), C.POINTER(C.c_void_p)]
lib.fmseg_engine_free.argtypes = [C.c_void_p]
lib.fmseg_segment_dicom.argtypes = [C.c_void_p, C.c_char_p, C.POINTER(C.c_uint8), C.c_size_t,
                                    C.POINTER(C.c_size_t), C.POINTER(C.c_double)]
lib.fmseg_last_findings.argtypes = [C.c_void_p, C.POINTER(Findings)]
if lib.fmseg_abi_version() != 1:
    sys.exit(f"this script speaks ABI 1; the library has {lib.fmseg_abi_version()}")


def check(status, call, engine=None):
    if status != OK:
        message = lib.fmseg_last_error().decode()  # read before any other fmseg call
        if engine:
            lib.fmseg_engine_free(engine)
        sys.exit(f"{call}: status {status}: {message}")


options = Options()
check(lib.fmseg_options_init(C.byref(options)), "fmseg_options_init")
if "--threads" in sys.argv:
    options.threads = int(sys.argv[sys.argv.index("--threads") + 1])
if "--no-warm-up" in sys.argv:
    options.warm_up = 0
engine = C.c_void_p()
check(lib.fmseg_engine_create(weights.encode(), C.byref(options), C.byref(engine)), "fmseg_engine_create")

# Ask for the size (no buffer), then segment into a buffer that fits.
dims, affine = (C.c_size_t * 3)(), (C.c_double * 16)()
status = lib.fmseg_segment_dicom(engine, series.encode(), None, 0, dims, affine)
if status != BUFFER_TOO_SMALL:
    check(status, "fmseg_segment_dicom (size query)", engine)
n = dims[0] * dims[1] * dims[2]
mask = (C.c_uint8 * n)()
check(lib.fmseg_segment_dicom(engine, series.encode(), mask, n, dims, affine), "fmseg_segment_dicom", engine)
found = Findings()
check(lib.fmseg_last_findings(engine, C.byref(found)), "fmseg_last_findings", engine)
print(f"fmseg {lib.fmseg_version().decode()}: {dims[0]} x {dims[1]} x {dims[2]} voxels, "
      f"{found.fm_voxels} FM voxels ({found.fm_volume_ml:.2f} ml), {found.lesion_count} lesion(s)")
with open(mask_out, "wb") as f:
    f.write(bytes(mask))
check(lib.fmseg_engine_free(engine), "fmseg_engine_free")
