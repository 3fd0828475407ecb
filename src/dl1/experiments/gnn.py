"""GNN theory made checkable (Q3.1–Q3.5): walks, GCN index vs matrix form, max aggregation, permutations, attention.

Builds the course's three graphs (star, wheel, 6-cycle), checks ``Aⁿ`` against brute-force walk enumeration, checks the
graph-convolution layer's index form against its matrix form on random graphs, shows that max aggregation has no
matrix form, that a GCN is permutation-equivariant while an MLP on ``[A, X]`` is not, and that self-attention is
equivariant until positional encodings are added.  Writes ``report.md``, ``summary.json`` and ``figures/gnn_*.png``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dl1 import gnn
from dl1.config import arg, shared
from dl1.errors import UsageError
from dl1.experiments.registry import Experiment
from dl1.lazy import Ref
from dl1.report import summary as keys

MLP_PARAMETER_LIMIT = 50_000_000  # the MLP on [A, X] of the largest graph: 400 MB of float64 weights


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = arg((4, 8, 16, 32, 64), "Numbers of nodes of the random graphs the claims are checked on.",
                                 min=3, max=500)
    edge_prob: float = arg(0.3, "Edge probability p of the random G(n, p) graphs.", min=0.0, max=1.0)
    features: int = arg(5, "Node feature dimension d_in of the random graphs.", min=1, max=512)
    hidden: int = arg(8, "Hidden/output width of the GCN, MLP and attention layers.", min=1, max=512)
    max_walk_length: int = arg(5, "Walk lengths 1..n compared between A^n and brute-force enumeration.", min=1, max=8)
    walk_budget: int = arg(200_000, "Largest number of walks enumerated one by one per graph and length "
                                    "(bigger random graphs skip the brute-force count).", min=1, max=10_000_000)
    permutations: int = arg(3, "Random relabellings tried per graph size.", min=1, max=100)
    tokens: int = arg(6, "Number of tokens in the self-attention drawing.", min=2, max=20)
    seed: int = shared("seed", 42, "Random seed (graphs, features, weights, permutations).")

    def check(self) -> None:
        if self.edge_prob == 0:
            raise UsageError("--edge_prob 0 gives graphs without edges; the checks need a node with two neighbours")
        n = max(self.sizes)
        weights = gnn.mlp_parameter_count(n, self.features, self.hidden, self.hidden)
        if weights > MLP_PARAMETER_LIMIT:
            raise UsageError(f"--sizes {n} --features {self.features} --hidden {self.hidden}: the MLP on [A, X] would "
                             f"have {weights:,} weights ({weights * 8 / 2**30:.1f} GiB), over the limit of "
                             f"{MLP_PARAMETER_LIMIT:,}; lower --sizes, --features or --hidden")


SMOKE = {"sizes": (4, 7), "max_walk_length": 3, "permutations": 1, "walk_budget": 5000}

EXPERIMENT = Experiment.of(
    __name__, __doc__, Config=Config, smoke=SMOKE, figures=Ref("dl1.report.gnn:make_figures"),
    no_export="checks the course's GNN claims on random graphs and trains no model",
    summary_keys=(keys.GNN_WALKS_AGREE,))
