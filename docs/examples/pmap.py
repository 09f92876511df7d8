#!/usr/bin/env python3
"""A parallel map on a virtual cluster (docs/clusters.md): run it inside a headnode.

    python3 pmap.py N INPUT OUTPUT [COMMAND ARGS...]      (default command: sha256sum)

Reads INPUT (one item a line), forks this VM into N clones with copper.clone(N): the program
itself goes on in every clone, with INPUT already in its memory. Clone k of the batch
(COPPER_BATCH_RANK) runs COMMAND on lines k, k+N, k+2N, ... (the line on stdin) and writes
OUTPUT.part-k; OUTPUT must be on the shared volume (/shared), which every clone mounts.
The caller waits for the N parts, writes OUTPUT (one result a line, in input order) and
kills its clones. Exit status 0, or 1 with one line on stderr.
"""
import os
import subprocess
import sys
import time

import copper

POLL_S = 0.5


def work(rank, n, lines, out, cmd):
    """In clone `rank` of the batch: its slice, written whole or not at all."""
    part = "%s.part-%d" % (out, rank)
    with open(part + ".tmp", "w") as f:
        for i in range(rank, len(lines), n):
            r = subprocess.run(cmd, input=lines[i] + "\n", capture_output=True, text=True)
            value = r.stdout.strip().replace("\t", " ").replace("\n", " ")
            f.write("%d\t%d\t%s\n" % (i, r.returncode, value))
    os.rename(part + ".tmp", part)


def gather(kids, n, lines, out):
    """In the caller: wait for every part (or a clone's death), join them in input order."""
    parts = ["%s.part-%d" % (out, k) for k in range(n)]
    mine = {c["id"] for c in kids}
    while not all(os.path.exists(p) for p in parts):
        live = {c["id"] for c in copper.clones() if c["state"] == "running"}
        if not mine <= live:
            raise RuntimeError("clone(s) %s died before finishing" % sorted(mine - live))
        time.sleep(POLL_S)
    results = {}
    for p in parts:
        with open(p) as f:
            for line in f:
                i, rc, value = line.rstrip("\n").split("\t", 2)
                if rc != "0":
                    raise RuntimeError("item %s failed with status %s" % (i, rc))
                results[int(i)] = value
        os.remove(p)
    with open(out, "w") as f:
        for i in range(len(lines)):
            f.write(results[i] + "\n")


def main(argv):
    if len(argv) < 4 or not argv[1].isdigit() or int(argv[1]) < 1:
        print("usage: pmap.py N INPUT OUTPUT [COMMAND ARGS...]", file=sys.stderr)
        return 2
    n, inp, out = int(argv[1]), argv[2], argv[3]
    cmd = argv[4:] or ["sha256sum"]
    with open(inp) as f:
        lines = f.read().splitlines()
    kids = copper.clone(n, ttl="1h")   # the fork: returns here and in each new clone
    if not kids:
        me = copper.whoami()
        work(int(me["COPPER_BATCH_RANK"]), n, lines, out, cmd)
        return 0                       # this clone idles until the caller kills it
    try:
        gather(kids, n, lines, out)
    finally:
        copper.kill(*[c["id"] for c in kids])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (copper.CopperError, OSError, RuntimeError) as e:
        print("pmap: %s" % e, file=sys.stderr)
        sys.exit(1)
