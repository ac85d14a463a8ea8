"""Identification on a large graph: a random 50-node DAG with 5 latent confounders.

Builds a random DAG (each earlier node is a parent with probability ``--density``, at most
``--max-parents`` parents), adds ``--latent`` latent confounders each pointing into two to three
observed nodes, then identifies ``P(y | do(t))`` for ``--pairs`` random pairs ``t``, ``y`` with a
directed path from ``t`` to ``y``. It prints, per pair, the strategy that answered and the wall
time of :func:`causal_wm.identify.identify` (back-door, front-door and instrument searches, then
the ID algorithm when needed), and the time of the ID algorithm alone on the latent projection
(run for every pair, whether or not a simpler criterion applies).

Run (from the repository root, with the project's virtual environment active)::

    python benchmarks/identify_large_graph.py
    python benchmarks/identify_large_graph.py --nodes 100 --latent 10 --pairs 10 --seed 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import causal_wm as cw
from causal_wm.identify import Hedge, id_algorithm, identify, latent_projection


def random_model(nodes: int, latent: int, density: float, max_parents: int, seed: int) -> cw.SCM:
    """A random SCM: ``nodes`` observed nodes ``v0..`` in topological order and ``latent`` confounders ``U0..``."""
    rng = np.random.default_rng(seed)
    names = [f"v{i}" for i in range(nodes)]
    parents: dict[str, list[str]] = {v: [] for v in names}
    for j in range(1, nodes):
        cand = [names[i] for i in range(j) if rng.random() < density]
        parents[names[j]] = list(rng.permutation(cand)[:max_parents]) if cand else []
    spec: dict[str, dict] = {f"U{k}": {"latent": True} for k in range(latent)}
    for k in range(latent):
        for c in rng.choice(names, size=int(rng.integers(2, 4)), replace=False):
            parents[str(c)].append(f"U{k}")
    for v in names:
        spec[v] = {"formula": " + ".join(parents[v])} if parents[v] else {}
    return cw.SCM.from_dict({"name": "random", "nodes": spec})


def pairs(scm: cw.SCM, count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` random (treatment, outcome) pairs of observed nodes with a directed path between them."""
    rng = np.random.default_rng(seed + 1)
    obs = list(scm.observed)
    out: list[tuple[str, str]] = []
    while len(out) < count:
        t, y = (str(v) for v in rng.choice(obs, size=2, replace=False))
        if y in scm.descendants([t]):
            out.append((t, y))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--latent", type=int, default=5)
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--max-parents", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    scm = random_model(args.nodes, args.latent, args.density, args.max_parents, args.seed)
    admg = latent_projection(scm.graph, scm.latent, scm.order)
    print(f"graph: {args.nodes} observed + {args.latent} latent nodes, {scm.graph.number_of_edges()} edges; "
          f"projection: {admg.dag.number_of_edges()} directed, {admg.bi.number_of_edges()} bidirected "
          f"({time.perf_counter() - t0:.3f} s to build)")
    print(f"{'treatment':>9} {'outcome':>7}  {'kind':<14} {'identify s':>10}  {'ID alone s':>10}  estimand length")
    times, id_times = [], []
    for t, y in pairs(scm, args.pairs, args.seed):
        start = time.perf_counter()
        try:
            kind = identify(scm, t, y).kind
        except cw.NotIdentifiable:
            kind = "not identified"
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        try:
            length = str(len(str(id_algorithm(admg, [t], [y]))))
        except Hedge:
            length = "hedge"
        id_times.append(time.perf_counter() - start)
        print(f"{t:>9} {y:>7}  {kind:<14} {times[-1]:>10.4f}  {id_times[-1]:>10.4f}  {length}")
    print(f"identify: median {statistics.median(times):.4f} s, max {max(times):.4f} s; "
          f"ID alone: median {statistics.median(id_times):.4f} s, max {max(id_times):.4f} s")


if __name__ == "__main__":
    main()
