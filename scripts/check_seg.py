#!/usr/bin/env python3
"""Check a DICOM SEG written by fmseg against its NIfTI mask with two independent readers.

    check_seg.py SEG MASK.nii.gz SOURCE_DIR [--empty]

1. highdicom reads the SEG (a BINARY segmentation, one segment labelled "fat metaplasia" with
   the SCT codes fmseg writes); each frame's source reference (SOP instance UID) names a file
   under SOURCE_DIR that lies on the frame's plane (same ImagePositionPatient and orientation);
   highdicom's own volume of the segment, mapped through its affine to world coordinates and
   back into the mask's voxel grid, equals the mask voxel for voxel.
2. dcmqi's segimage2itkimage converts the SEG to NIfTI; that image, mapped by world position
   (so a mirrored or shifted SEG fails), equals the mask voxel for voxel, and holds every FM
   voxel of the mask.

With --empty the mask must be empty and dcmqi is not asked (it writes no image for a segment
without pixels). Prints one line per check; exits 1 on the first failure.
"""

import glob
import os
import subprocess
import sys
import tempfile

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def fail(msg):
    print(f"check_seg: FAIL: {msg}")
    sys.exit(1)


def to_mask_index(world_lps, mask_img):
    """LPS points (N x 3) to voxel indices of the mask (N x 3, float)."""
    ras = world_lps * np.array([-1.0, -1.0, 1.0])
    inv = np.linalg.inv(mask_img.affine)
    return ras @ inv[:3, :3].T + inv[:3, 3]


def compare_on_world_grid(name, values, index_affine_lps, mask_img, mask):
    """values: an array whose voxel index (a, b, c) maps to LPS by index_affine_lps."""
    idx = np.indices(values.shape).reshape(3, -1).T.astype(float)
    world = idx @ index_affine_lps[:3, :3].T + index_affine_lps[:3, 3]
    m = to_mask_index(world, mask_img)
    r = np.rint(m)
    off = np.abs(m - r).max()
    if off > 1e-3:
        fail(f"{name}: voxel centres fall between the mask's voxels (off by {off:.4f} voxel)")
    r = r.astype(int)
    inside = np.all((r >= 0) & (r < np.array(mask.shape)), axis=1)
    got = values.reshape(-1) > 0
    if got[~inside].any():
        fail(f"{name}: {int(got[~inside].sum())} FM voxels outside the mask's grid")
    want = mask[r[inside, 0], r[inside, 1], r[inside, 2]] > 0
    diff = int((got[inside] != want).sum())
    if diff:
        fail(f"{name}: {diff} voxels differ from the mask (of {int(want.sum())} FM voxels)")
    covered = int(want.sum())
    if covered != int((mask > 0).sum()):
        fail(f"{name}: covers {covered} of the mask's {int((mask > 0).sum())} FM voxels")
    print(f"check_seg: {name}: {values.size} voxels equal the mask by world position ({covered} FM)")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    empty = "--empty" in sys.argv
    if len(args) != 3:
        print(__doc__)
        sys.exit(2)
    seg_path, mask_path, source_dir = args
    mask_img = nib.load(mask_path)
    mask = np.asarray(mask_img.dataobj)
    if empty and mask.any():
        fail("--empty given but the mask has FM voxels")

    seg = hd.seg.segread(seg_path)
    if seg.SOPClassUID != "1.2.840.10008.5.1.4.1.1.66.4" or seg.Modality != "SEG":
        fail(f"not a Segmentation Storage object: {seg.SOPClassUID} {seg.Modality}")
    if seg.segmentation_type != hd.seg.SegmentationTypeValues.BINARY:
        fail(f"segmentation type {seg.segmentation_type}")
    segs = list(seg.SegmentSequence)
    if len(segs) != 1 or segs[0].SegmentLabel != "fat metaplasia":
        fail(f"segments {[s.SegmentLabel for s in segs]}")
    d = seg.get_segment_description(1)
    if (d.segmented_property_category.value, d.segmented_property_type.value) != ("85756007", "55603005"):
        fail(f"codes {d.segmented_property_category} {d.segmented_property_type}")
    print(f"check_seg: highdicom reads {os.path.basename(seg_path)}: {seg.NumberOfFrames} frames, segment 1 "
          f"'{segs[0].SegmentLabel}' ({d.segmented_property_type.meaning})")

    # every frame on its source image's plane
    sources = {}
    for f in glob.glob(os.path.join(source_dir, "**", "*"), recursive=True):
        if os.path.isfile(f):
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception:
                continue
            sources[ds.SOPInstanceUID] = ds
    iop = np.array(seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, float)
    for n, fg in enumerate(seg.PerFrameFunctionalGroupsSequence, 1):
        ref = fg.DerivationImageSequence[0].SourceImageSequence[0]
        src = sources.get(ref.ReferencedSOPInstanceUID)
        if src is None:
            fail(f"frame {n} references {ref.ReferencedSOPInstanceUID}, not a file under {source_dir}")
        ipp = np.array(fg.PlanePositionSequence[0].ImagePositionPatient, float)
        if "PerFrameFunctionalGroupsSequence" in src:  # an Enhanced source: the referenced frame
            sfg = src.PerFrameFunctionalGroupsSequence[int(ref.ReferencedFrameNumber) - 1]
            s_ipp = sfg.PlanePositionSequence[0].ImagePositionPatient
            shared = src.SharedFunctionalGroupsSequence[0]
            s_iop = (sfg if "PlaneOrientationSequence" in sfg else shared).PlaneOrientationSequence[0].ImageOrientationPatient
        else:
            s_ipp, s_iop = src.ImagePositionPatient, src.ImageOrientationPatient
        if np.abs(ipp - np.array(s_ipp, float)).max() > 1e-3 or np.abs(iop - np.array(s_iop, float)).max() > 1e-6:
            fail(f"frame {n} is not on the plane of its source image {ref.ReferencedSOPInstanceUID}")
    print(f"check_seg: every frame lies on the plane of the source image it references ({len(sources)} sources)")

    vol = seg.get_volume(combine_segments=True)
    compare_on_world_grid("highdicom volume", np.asarray(vol.array), np.asarray(vol.affine), mask_img, mask)

    if empty:
        return
    with tempfile.TemporaryDirectory() as out:
        exe = os.path.join(os.path.dirname(sys.executable), "segimage2itkimage")
        r = subprocess.run([exe, "--inputDICOM", seg_path, "--outputDirectory", out, "--outputType", "nifti"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"segimage2itkimage failed ({r.returncode}): {r.stdout}{r.stderr}")
        files = sorted(glob.glob(os.path.join(out, "*.nii*")))
        if len(files) != 1:
            fail(f"segimage2itkimage wrote {files}")
        img = nib.load(files[0])
        compare_on_world_grid("dcmqi segimage2itkimage", np.asarray(img.dataobj), LPS_TO_RAS @ img.affine,
                              mask_img, mask)


if __name__ == "__main__":
    main()
