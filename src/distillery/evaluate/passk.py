"""pass@k with the unbiased estimator of Chen et al. (2021), "Evaluating Large Language
Models Trained on Code" (the HumanEval paper), section 2.1.

With ``n`` samples of which ``c`` are correct, the probability that at least one of ``k``
samples drawn without replacement is correct is ``1 - C(n - c, k) / C(n, k)``, computed in
the numerically stable product form ``1 - prod_{i = n - c + 1}^{n} (1 - k / i)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem.

    Args:
        n: samples drawn (>= 1).
        c: correct samples among them (0 <= c <= n).
        k: the k of pass@k (1 <= k <= n).

    Returns:
        A probability in [0, 1].

    Raises:
        ValueError: arguments out of range.
    """
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need n >= 1, 0 <= c <= n, 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(samples: Sequence[int], correct: Sequence[int], k: int) -> float:
    """Mean pass@k over problems, ``samples[i]`` and ``correct[i]`` per problem.

    Raises:
        ValueError: mismatched lengths, no problems, or a problem with fewer than ``k`` samples.
    """
    if len(samples) != len(correct) or not samples:
        raise ValueError("samples and correct must be non-empty and of the same length")
    return float(np.mean([pass_at_k(n, c, k) for n, c in zip(samples, correct, strict=True)]))
