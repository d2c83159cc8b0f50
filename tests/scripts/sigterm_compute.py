"""Computes without ever calling geode_mpi again (pure Python), when SIGTERM arrives."""

import argparse

from geode_mpi import Geode

parser = argparse.ArgumentParser()
parser.add_argument("--dir", required=True)
args = parser.parse_args()

geode = Geode(checkpoint_dir=args.dir)
print(f"ready {geode.rank}", flush=True)
total = 0
while True:  # a job's long computation
    total = (total + 1) % 1_000_003
