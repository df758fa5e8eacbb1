#!/usr/bin/env python3
"""Layers only look down: every `crate::...` path in src/ must name a module of the same
layer or one below it (ARCHITECTURE.md lists the layers). Comments are ignored.

    scripts/check-layers.py            # exit 1 and list each upward import
    scripts/check-layers.py --list     # print every layer's modules

There are no exceptions: a module that needs something above it moves up (as the CUDA graph
forward moved into `engine` and the device-resident study into `pipeline`), or what it needs
moves down. Run by .ci/run.
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# bottom to top; a module path matches the longest prefix listed
LAYERS = [
    ["error", "tensor", "volume", "linalg"],
    ["io"],
    # one layer: backends take their conv specs from here and the catalog its specs from them
    ["weights", "model::catalog", "model::init", "backend"],
    ["model"],
    ["engine"],
    # fuzz targets call the readers of io and weights and the batch rules of pipeline
    ["pipeline", "fuzz"],
    # the library front door (Rust API and C ABI) over the pipeline
    ["embed"],
    ["phantom"],
    ["train"],
    ["cli", "outln", "out"],
]



def layer_of(path):
    best, depth = None, -1
    for i, mods in enumerate(LAYERS):
        for m in mods:
            parts = m.split("::")
            if path[: len(parts)] == parts and len(parts) > depth:
                best, depth = i, len(parts)
    return best


def module_of(rel):
    p = rel[:-3].split("/")
    if p[-1] in ("mod", "lib", "main"):
        p = p[:-1]
    return p


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def main():
    bad = []
    for dirpath, _, files in os.walk(ROOT):
        for f in sorted(files):
            if not f.endswith(".rs"):
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, ROOT).replace(os.sep, "/")
            mine = module_of(rel)
            if not mine:
                continue  # lib.rs / main.rs: the crate root sees everything
            here = layer_of(mine)
            if here is None:
                bad.append(f"{rel}: module {'::'.join(mine)} is in no layer (add it to LAYERS)")
                continue
            for m in re.finditer(r"crate::((?:[a-z_][a-z0-9_]*)(?:::[a-z_][a-z0-9_]*)*)", strip_comments(open(full).read())):
                target = m.group(1).split("::")
                there = layer_of(target)
                if there is None:
                    bad.append(f"{rel}: crate::{m.group(1)} is in no layer")
                elif there > here:
                    bad.append(
                        f"{rel} (layer {here}: {'::'.join(mine)}) imports crate::{m.group(1)} (layer {there}): "
                        "a layer may only use what is below it"
                    )
    if "--list" in sys.argv:
        for i, mods in enumerate(LAYERS):
            print(f"layer {i}: {', '.join(mods)}")
    if bad:
        print("\n".join(bad), file=sys.stderr)
        sys.exit(1)
    print(f"check-layers: ok ({len(LAYERS)} layers, no upward import)")


if __name__ == "__main__":
    main()
