#!/usr/bin/env python3
"""Time `fmseg batch --plan` (the archive index) on a generated tree of small DICOM files.

    bench_batch_index.py [--files 10000] [--slices 25] [--dir DIR] [--fmseg target/release/fmseg]

Writes DIR/tree (default: a temporary directory): FILES // SLICES series of SLICES 64x64 MR
slices (explicit VR little endian, half T1, half T2, four series per study) with pydicom (the
venv of scripts/install-dicom-peers.sh has it), then runs the plan three times and prints each
wall time: the first after dropping the page cache where that is allowed (root), else as it
comes. The README's index figure is this script's output on the development machine.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def write_tree(root, files, slices):
    px = (np.arange(64 * 64, dtype=np.int16).reshape(64, 64) % 500).tobytes()
    for s in range(files // slices):
        study, series, frame = generate_uid(), generate_uid(), generate_uid()
        d = os.path.join(root, f"st{s // 4:04d}", f"se{s:04d}")
        os.makedirs(d, exist_ok=True)
        for k in range(slices):
            m = FileMetaDataset()
            m.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
            m.MediaStorageSOPInstanceUID = generate_uid()
            m.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = m
            ds.SOPClassUID, ds.SOPInstanceUID = m.MediaStorageSOPClassUID, m.MediaStorageSOPInstanceUID
            ds.Modality, ds.PatientName, ds.PatientID = "MR", "BENCH", "1"
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.SeriesDescription = "T1 TSE tra" if s % 2 == 0 else "T2 STIR tra"
            ds.SeriesNumber, ds.InstanceNumber = 1 + s % 2, k + 1
            ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 4.0 * k], [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing, ds.SliceThickness, ds.EchoTime, ds.RepetitionTime = [0.8, 0.8], 4, 12, 600
            ds.Rows = ds.Columns = 64
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.PixelData = px
            ds.save_as(os.path.join(d, f"IM{k:04d}.dcm"), enforce_file_format=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--files", type=int, default=10000)
    p.add_argument("--slices", type=int, default=25)
    p.add_argument("--dir")
    p.add_argument("--fmseg", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "fmseg"))
    a = p.parse_args()
    base = a.dir or tempfile.mkdtemp(prefix="fmseg-index-")
    tree = os.path.join(base, "tree")
    if not os.path.isdir(tree):
        t = time.time()
        write_tree(tree, a.files, a.slices)
        print(f"bench_batch_index: wrote {a.files} files in {time.time() - t:.1f} s under {tree}")
    for run in range(3):
        if run == 0:
            try:
                subprocess.run(["sync"], check=True)
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3\n")
                cache = "page cache dropped"
            except OSError:
                cache = "page cache as it was"
        else:
            cache = "warm"
        t = time.time()
        r = subprocess.run([a.fmseg, "batch", tree, "--plan"], capture_output=True, text=True)
        wall = time.time() - t
        if r.returncode != 0:
            sys.exit(f"bench_batch_index: fmseg failed: {r.stderr}")
        line = [l for l in r.stderr.splitlines() if "series in" in l]
        print(f"bench_batch_index: run {run + 1} ({cache}): {wall:.2f} s wall; {line[0] if line else ''}")


if __name__ == "__main__":
    main()
