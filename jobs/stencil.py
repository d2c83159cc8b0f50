"""2-D heat diffusion: an explicit 5-point Jacobi stencil on row slabs, checked against numpy.

The N x N grid holds its edges fixed (the top edge at 1, the others at 0) and starts with a hot
square in the middle. Each step replaces every interior value by itself plus ALPHA times the
discrete Laplacian of its four neighbours. The rows are split into one slab per node, as evenly
as they go (slabs differ by at most one row, so N need not divide evenly); before each step
every node sends its first and last rows (`HaloRow` messages) to the nodes above and below,
and writes what it receives into its ghost rows. At the end node0 gathers the slabs, repeats
the same steps serially with numpy, and fails (exit status 1, naming the worst cell) unless
the largest difference is at most 1e-12. The arithmetic per cell is the serial one, so the
difference is exactly 0.

Any number of ranks from 1 to N works, with any number of nodes up to N (``--nodes``: at least
the number of ranks; default one per rank, or 4 in one process); rank 0 prints one line::

    python jobs/stencil.py                                   # one process, 4 nodes
    python jobs/stencil.py --n 256 --steps 200
    mpiexec -n 1 python -m geode_mpi jobs/stencil.py         # 1 rank: 4 nodes, as above
    mpiexec -n 2 python -m geode_mpi jobs/stencil.py         # 2 ranks, 2 nodes
    mpiexec -n 4 python -m geode_mpi jobs/stencil.py --n 256 --steps 200
    mpiexec -n 3 python -m geode_mpi jobs/stencil.py --n 100 --nodes 7   # uneven, 2-3 per rank

It prints, for example, ``stencil OK: 128x128, 100 steps on 4 nodes (4 ranks), max |error|
0.0e+00, 0.21 s`` (the time covers the steps and the gather, not the serial check).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from geode_mpi import Geode, Message

ALPHA = 0.2  # diffusion number nu * dt / dx**2; the explicit scheme is stable up to 0.25
TOLERANCE = 1e-12
TIMEOUT = 60.0  # seconds any one receive may wait


class HaloRow(Message):
    """A boundary row of a slab, for the neighbouring node's ghost row at ``step``."""

    def __init__(self, row: np.ndarray, step: int) -> None:
        super().__init__(row)
        self.step = step


class Slab(Message):
    """A node's rows at the end, for node0: global rows ``first`` onwards."""

    def __init__(self, rows: np.ndarray, first: int) -> None:
        super().__init__(rows)
        self.first = first


def initial_grid(n: int) -> np.ndarray:
    grid = np.zeros((n, n))
    grid[0, :] = 1.0  # the hot edge, held fixed like the other three
    grid[3 * n // 8 : 5 * n // 8, 3 * n // 8 : 5 * n // 8] = 0.5
    return grid


def jacobi(u: np.ndarray) -> np.ndarray:
    """One step on every interior cell of ``u`` (all rows but the first and last)."""
    new = u.copy()
    inner = u[1:-1, 1:-1]
    new[1:-1, 1:-1] = inner + ALPHA * (
        u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4.0 * inner
    )
    return new


def serial(n: int, steps: int) -> np.ndarray:
    grid = initial_grid(n)
    for _ in range(steps):
        grid = jacobi(grid)
    return grid


def slab_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Rows [lo, hi) of each slab: the first n % parts slabs get one row more."""
    sizes = [n // parts + (k < n % parts) for k in range(parts)]
    starts = np.cumsum([0, *sizes])
    return [(int(starts[k]), int(starts[k + 1])) for k in range(parts)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="grid size N (N x N), default 128")
    parser.add_argument("--steps", type=int, default=100, help="time steps, default 100")
    parser.add_argument(
        "--nodes", type=int, default=None, help="slabs (default: one per rank, 4 in one process)"
    )
    # For the tests: corrupt one cell mid-run, to show that the final check catches it.
    parser.add_argument("--perturb", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.n < 3:
        parser.error(f"--n must be >= 3 (a grid with an interior), got {args.n}")
    if args.steps < 0:
        parser.error(f"--steps must be >= 0, got {args.steps}")
    return args


def main() -> None:
    args = parse_args()
    with Geode(nodes=args.nodes) as geode:
        nodes = geode.nodes
        if args.n < len(nodes):
            raise SystemExit(f"--n must be >= the number of nodes ({len(nodes)}), got {args.n}")
        start = time.perf_counter()
        grid = solve(geode, args)
        seconds = time.perf_counter() - start
        ranks = geode.size
    # Checked after close(), which every rank reaches: a failure here ends only rank 0, with
    # nobody left waiting for it.
    if grid is not None:
        check(grid, args, len(nodes), ranks, seconds)


def solve(geode: Geode, args: argparse.Namespace) -> np.ndarray | None:
    """Run the steps on this rank's slabs; the whole grid on node0's rank, None elsewhere."""
    n, nodes = args.n, geode.nodes
    bounds = slab_bounds(n, len(nodes))
    full = initial_grid(n)
    # Each local slab with a ghost row above and below (unused at the grid's top and bottom).
    slabs: dict[int, np.ndarray] = {}
    for node in geode.local_nodes:
        k = nodes.index(node)
        lo, hi = bounds[k]
        slab = np.zeros((hi - lo + 2, n))
        slab[1:-1] = full[lo:hi]
        slabs[k] = slab
    last = len(nodes) - 1
    for step in range(args.steps):
        for k, slab in slabs.items():  # every send first: one process may host all the nodes
            if k > 0:
                geode.send(HaloRow(slab[1], step), nodes[k], nodes[k - 1], timeout=TIMEOUT)
            if k < last:
                geode.send(HaloRow(slab[-2], step), nodes[k], nodes[k + 1], timeout=TIMEOUT)
        for k, slab in slabs.items():
            if k > 0:
                slab[0] = halo(geode, nodes[k], nodes[k - 1], step)
            if k < last:
                slab[-1] = halo(geode, nodes[k], nodes[k + 1], step)
            new = jacobi(slab)
            lo, hi = bounds[k]
            if lo == 0:  # the grid's top and bottom rows are fixed
                new[1] = slab[1]
            if hi == n:
                new[-2] = slab[-2]
            if args.perturb and step == args.steps // 2 and lo <= n // 2 < hi:
                new[n // 2 - lo + 1, n // 2] += 1e-3
            slabs[k] = new
    for k, slab in slabs.items():
        geode.send(Slab(slab[1:-1], bounds[k][0]), nodes[k], nodes[0], timeout=TIMEOUT)
    if not geode.hosts(nodes[0]):
        return None
    grid = np.full((n, n), np.nan)
    for node in nodes:
        got = geode.receive(nodes[0], source=node, type=Slab, timeout=TIMEOUT)
        grid[got.first : got.first + len(got.data)] = got.data
    return grid


def halo(geode: Geode, node: str, neighbour: str, step: int) -> np.ndarray:
    msg = geode.receive(node, source=neighbour, type=HaloRow, timeout=TIMEOUT)
    if msg.step != step:
        raise RuntimeError(f"{node} got {neighbour}'s halo row of step {msg.step} at step {step}")
    return msg.data


def check(
    grid: np.ndarray, args: argparse.Namespace, nodes: int, ranks: int, seconds: float
) -> None:
    """Compare with the serial computation; exit with status 1 naming the worst cell if off."""
    want = serial(args.n, args.steps)
    errors = np.abs(grid - want)
    errors[np.isnan(errors)] = np.inf  # a row no slab delivered
    worst = float(errors.max())
    plural = "rank" if ranks == 1 else "ranks"
    what = f"{args.n}x{args.n}, {args.steps} steps on {nodes} nodes ({ranks} {plural})"
    if not worst <= TOLERANCE:
        row, col = np.unravel_index(int(errors.argmax()), errors.shape)
        raise SystemExit(
            f"stencil FAILED: {what}: max |error| {worst:.1e} > {TOLERANCE:g} at row {row}, "
            f"column {col} (got {grid[row, col]:.17g}, serial numpy gives {want[row, col]:.17g})"
        )
    print(f"stencil OK: {what}, max |error| {worst:.1e}, {seconds:.2f} s", flush=True)


if __name__ == "__main__":
    main()
