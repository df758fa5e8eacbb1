#!/usr/bin/env python3
"""How long a scanner waits for fmseg serve: "last C-STORE response -> SEG received at the
destination", over N synthetic SIJ series sent one after another (each waits for its SEG, so
no series queues behind another).

    scripts/serve_latency.py [--series 20] [--timeout 2] [--threads 0] [--json OUT.json]

Needs DCMTK (storescu, storescp: scripts/install-debian-deps.sh) and a release build
(`cargo build --release`). The series are `fmseg phantom` studies (336 x 320 x 23 and similar,
0.6-0.8 mm in plane, 4 mm slices); the node runs with the bundled weights. The latency includes
the series timeout (`--timeout`, the node's `--series-timeout`): the table states both.
Not a test: the README's numbers come from it.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, secs=30):
    t = time.time()
    while time.time() - t < secs:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port} after {secs} s")


def quantile(xs, q):
    """Nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(-(-q * len(s) // 1)) - 1))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=2.0, help="the node's --series-timeout, s")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--fmseg", default=os.path.join(ROOT, "target/release/fmseg"))
    ap.add_argument("--json", help="write the measurements here")
    a = ap.parse_args()
    for t in ("storescu", "storescp"):
        if not shutil.which(t):
            sys.exit(f"{t} not found (scripts/install-debian-deps.sh installs DCMTK)")
    work = tempfile.mkdtemp(prefix="fmseg-serve-latency-")
    procs = []
    try:
        subprocess.run([a.fmseg, "phantom", "--out", f"{work}/ph", "--cases", str(a.series), "--seed", "11"],
                       check=True, stdout=subprocess.DEVNULL)
        dest_port = free_port()
        os.makedirs(f"{work}/dest")
        procs.append(subprocess.Popen(["storescp", "-aet", "DEST", "-od", f"{work}/dest", "+uf", str(dest_port)]))
        wait_port(dest_port)
        node_port = free_port()
        log = open(f"{work}/serve.log", "w")
        procs.append(subprocess.Popen(
            [a.fmseg, "serve", "--listen", f"127.0.0.1:{node_port}", "--out", f"{work}/node",
             "--send-to", f"DEST@127.0.0.1:{dest_port}", "--series-timeout", str(a.timeout),
             "--threads", str(a.threads)], stderr=log))
        wait_port(node_port, 120)
        lat = []
        cases = sorted(d for d in os.listdir(f"{work}/ph") if d.startswith("case_"))
        for n, case in enumerate(cases):
            d = f"{work}/ph/{case}/dicom"
            files = sorted(os.path.join(d, f) for f in os.listdir(d))
            before = len(os.listdir(f"{work}/dest"))
            subprocess.run(["storescu", "-aet", "SCANNER", "-aec", "FMSEG", "127.0.0.1", str(node_port), *files],
                           check=True)
            t0 = time.monotonic()  # storescu has its last C-STORE response
            while len(os.listdir(f"{work}/dest")) == before:
                time.sleep(0.01)
                if time.monotonic() - t0 > 600:
                    sys.exit(f"no SEG for {case} after 600 s; log: {work}/serve.log")
            lat.append(time.monotonic() - t0)
            print(f"{case}: {len(files)} instances, SEG after {lat[-1]:.2f} s", flush=True)
        res = {
            "series": len(lat), "series_timeout_s": a.timeout, "threads": a.threads,
            "p50_s": quantile(lat, 0.5), "p95_s": quantile(lat, 0.95), "p99_s": quantile(lat, 0.99),
            "max_s": max(lat), "latencies_s": lat,
        }
        print(f"last C-STORE response -> SEG at the destination, {len(lat)} series: "
              f"p50 {res['p50_s']:.2f} s, p95 {res['p95_s']:.2f} s, p99 {res['p99_s']:.2f} s, max {res['max_s']:.2f} s "
              f"(of which {a.timeout} s is the series timeout)")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
