"""What the evaluation scripts share: the options that name a fresh synthetic test set, its
generation by `fmseg phantom`, the check that none of its studies is a training study, and
running fmseg with its error shown. Standard library only.
"""

import json
import os
import subprocess
import sys


def add_set_args(ap, set_seed, cases, out, exclude_seeds):
    """The set's options, with this script's defaults."""
    ap.add_argument("--set-seed", type=int, default=set_seed)
    ap.add_argument("--cases", type=int, default=cases)
    ap.add_argument("--out", default=out)
    ap.add_argument("--fmseg", default="target/release/fmseg")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--exclude-seeds", default=exclude_seeds, help="training seeds A..B (phantom:A..B)")
    ap.add_argument("--keep", action="store_true", help="reuse what OUT already holds")


def run(cmd):
    """Runs fmseg; exits with its stderr on failure, else returns its stdout."""
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr}")
    return r.stdout


def fresh_set(args):
    """Writes (or with --keep reuses) OUT/set and returns `(set_dir, [(case_id, seed)])`, after
    checking that no case seed falls in --exclude-seeds (the training run's `phantom:A..B`)."""
    set_dir = os.path.join(os.path.abspath(args.out), "set")
    if not (args.keep and os.path.exists(os.path.join(set_dir, "cases.csv"))):
        run([args.fmseg, "phantom", "--out", set_dir, "--seed", str(args.set_seed), "--cases", str(args.cases),
             "--force"])
    lo, hi = (int(v) for v in args.exclude_seeds.split(".."))
    cases = []
    for i in range(args.cases):
        case_id = f"case_{i:03d}"
        seed = json.load(open(os.path.join(set_dir, case_id, "manifest.json")))["seed"]
        if lo <= seed < hi:
            sys.exit(f"{case_id}: seed {seed} is one of the training seeds {args.exclude_seeds}")
        cases.append((case_id, seed))
    return set_dir, cases
