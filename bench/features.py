"""Feature measures against scikit-learn: variance explained, NMF, V-information of many codes.

Each row times actstore and the scikit-learn code a user would write for the same numbers
(best of ``--repeat`` rounds, one process), checks the numbers agree, and prints the ratio.

* variance explained: every (fold, feature) of one layer — ``LinearRegression`` + ``r2_score``
  per fold and feature vs :func:`actstore.probes.variance_explained` (one streamed pass);
* NMF: ``sklearn.decomposition.NMF(init="random", solver="cd")`` vs :func:`actstore.probes.nmf`
  (same k, same iteration cap): time and objective;
* V-information of k codes: ``Ridge(alpha)`` fitted per fold and penalty on all codes at once
  vs :func:`actstore.probes.vinfo_of_codes` (one eigendecomposition per fold).

    .venv/bin/python bench/features.py [--n 10000] [--d 256] [--k 256]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    from sklearn.decomposition import NMF
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.metrics import r2_score

    import actstore.probes as ap

    ap_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap_.add_argument("--n", type=int, default=10000)
    ap_.add_argument("--d", type=int, default=256)
    ap_.add_argument("--k", type=int, default=256)
    ap_.add_argument("--repeat", type=int, default=2)
    args = ap_.parse_args()
    n, d, k = args.n, args.d, args.k
    rng = np.random.default_rng(0)
    labels = {f: rng.integers(0, 10, n) for f in ("shape", "texture", "color")}
    emb = {f: rng.standard_normal((10, d)) for f in labels}
    X = np.maximum(sum(0.5 * emb[f][labels[f]] for f in labels)
                   + rng.standard_normal((n, d)), 0).astype(np.float32)
    folds = ap.stratified_folds(n, 5, seed=0, stratify=labels["shape"])
    rows = []

    # -- variance explained ------------------------------------------------------------------
    def sk_variance():
        out = np.zeros((5, 3))
        Xd = X.astype(np.float64)
        for j, f in enumerate(labels):
            F = np.eye(10)[labels[f]]
            for kf, (tr, te) in enumerate(folds.split()):
                m = LinearRegression().fit(F[tr], Xd[tr])
                out[kf, j] = r2_score(Xd[te], m.predict(F[te]), multioutput="variance_weighted")
        return out

    t_sk, ref = _best(sk_variance, args.repeat)
    t_as, res = _best(lambda: ap.variance_explained(X, labels, folds), args.repeat)
    diff = float(np.abs(res["r2_folds"] - ref).max())
    rows.append(("variance explained, 3 features x 5 folds", t_sk, t_as, f"max |dR2| {diff:.1e}"))

    # -- NMF ---------------------------------------------------------------------------------
    kn = min(64, d // 2)
    A = X[: min(n, 5000)].astype(np.float64)

    def sk_nmf():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return NMF(kn, init="random", solver="cd", random_state=0, max_iter=200).fit(A)

    t_sk, m = _best(sk_nmf, args.repeat)
    t_as, r = _best(lambda: ap.nmf(A, kn, seed=0, max_epochs=200, mode="batch"), args.repeat)
    ratio = (r.error / m.reconstruction_err_) ** 2
    rows.append((f"NMF {A.shape[0]}x{d}, k={kn}, 200 passes (batch)", t_sk, t_as,
                 f"objective ratio {ratio:.4f}"))
    t_as2, r2 = _best(lambda: ap.nmf(A, kn, seed=0, max_epochs=200), args.repeat)
    rows.append((f"NMF {A.shape[0]}x{d}, k={kn}, minibatch 2048", t_sk, t_as2,
                 f"objective ratio {(r2.error / m.reconstruction_err_) ** 2:.4f}, "
                 f"{r2.n_epochs} passes"))

    # -- V-information of k codes -------------------------------------------------------------
    Z = np.abs(X[:, : min(d, 64)] @ rng.standard_normal((min(d, 64), k))
               + rng.standard_normal((n, k)))
    alphas = ap.DEFAULT_ALPHAS

    def sk_vinfo():
        Zs = (Z - Z.mean(0)) / Z.std(0)
        Xd = X.astype(np.float64)
        scores = np.zeros((len(alphas), k))
        splits = list(folds.split())
        for a_i, a in enumerate(alphas):
            for tr, te in splits:
                m = Ridge(alpha=a).fit(Xd[tr], Zs[tr])
                scores[a_i] += r2_score(Zs[te], m.predict(Xd[te]),
                                        multioutput="raw_values") / len(splits)
        # the penalty of the best mean held-out R^2; I_V = max(0, that R^2)
        return np.maximum(scores.max(axis=0), 0)

    t_sk, ref = _best(sk_vinfo, 1)
    t_as, res = _best(lambda: ap.vinfo_of_codes(X, Z, folds), args.repeat)
    diff = float(np.abs(res["vinfo"] - ref).max())
    rows.append((f"V-information of {k} codes, {len(alphas)} penalties x 5 folds", t_sk, t_as,
                 f"max |dI_V| {diff:.1e}"))

    print(f"\nn = {n} samples, d = {d} units\n")
    print("| computation | scikit-learn s | actstore s | speed-up | check |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, a, b, check in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | **{a / b:.1f}x** | {check} |")


if __name__ == "__main__":
    main()
