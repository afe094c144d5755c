#!/usr/bin/python3
"""Writes packages/eval/test/fixtures/metrics.json, the reference values of the evaluation metrics.

    /usr/bin/python3 scripts/reference/eval_fixtures.py [--out packages/eval/test/fixtures/metrics.json]

Needs scikit-learn 1.2, SciPy 1.10, NLTK 3.8 and numpy (the system python3 has them); the gm product
itself never runs Python. Inputs are fixed: seeded numpy Generators (PCG64, seeds below) plus
hand-written edge cases. Every reference value comes from the library the TypeScript port follows:

- classification: sklearn accuracy_score, f1_score, precision_score, recall_score,
  precision_recall_fscore_support, confusion_matrix (zero_division left at "warn" -> 0);
- clustering: sklearn normalized_mutual_info_score / adjusted_rand_score, and scib's native ARI
  transcribed from scib/metrics/ari.py (scib is not installed);
- silhouette: sklearn silhouette_samples on scipy cdist distances (direct, float64) and on the
  float32 embedding itself (sklearn's dot-product trick, compared at 1e-6); scib's silhouette_batch
  and isolated_labels_asw loops are transcribed below over sklearn's silhouette_samples;
- graph connectivity: sklearn NearestNeighbors kNN graph, scipy.sparse.csgraph.connected_components;
- reconstruction: nltk edit_distance and sentence_bleu, scipy rankdata / spearmanr / pearsonr, and
  GeneMamba's eval_utils.bleu_score transcribed from evaluation.md section 8;
- distributions: numpy histogram, scipy.stats.entropy, scipy.spatial.distance.jensenshannon,
  sklearn roc_auc_score and cosine_similarity.

NaN is written as null (JSON has no NaN). The large clustering cases (60k labels) are not stored:
both sides regenerate them with the LCG below (the tests mirror it in TypeScript).
"""

import argparse
import json
import math
import os
import warnings

import numpy as np
import scipy
import sklearn
import nltk
from nltk.metrics.distance import edit_distance
from nltk.translate.bleu_score import sentence_bleu
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist, jensenshannon
from scipy.stats import entropy, pearsonr, rankdata, spearmanr
from sklearn.metrics import (
    accuracy_score,
    adjusted_rand_score,
    confusion_matrix,
    f1_score,
    normalized_mutual_info_score,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
    silhouette_samples,
    silhouette_score,
)
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.neighbors import NearestNeighbors

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "packages", "eval", "test", "fixtures", "metrics.json")

warnings.filterwarnings("ignore")  # sklearn zero-division, nltk BLEU and scipy constant-input warnings


def clean(v):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN to None."""
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return clean(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if math.isnan(f) else f
    return v


# ---------------------------------------------------------------- LCG shared with the TS tests
def lcg(seed):
    """Numerical Recipes LCG: s <- (1664525 s + 1013904223) mod 2^32; yields s >> 16 (16 bits)."""
    s = seed & 0xFFFFFFFF
    while True:
        s = (1664525 * s + 1013904223) & 0xFFFFFFFF
        yield s >> 16


def lcg_labels(seed, n, ka, kb, agree_percent):
    """a_i uniform in [0, ka); b_i = (7 a_i + 1) mod kb with probability agree_percent %, else uniform.

    Draws per element, in order: a = next() % ka; u = next() % 100; if u >= agree_percent: b = next() % kb.
    """
    g = lcg(seed)
    a = np.empty(n, dtype=np.int64)
    b = np.empty(n, dtype=np.int64)
    for i in range(n):
        a[i] = next(g) % ka
        if next(g) % 100 < agree_percent:
            b[i] = (7 * a[i] + 1) % kb
        else:
            b[i] = next(g) % kb
    return a, b


# ---------------------------------------------------------------- classification
def classification_fixture(rng):
    cases = []
    classes = ["B cell", "CD4 T", "CD8 T", "Mono", "NK", "DC"]
    y_true = rng.choice(classes[:5], size=120, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    y_pred = y_true.copy()
    flip = rng.random(120) < 0.3
    y_pred[flip] = rng.choice(classes, size=int(flip.sum()))  # "DC" appears only in predictions
    cases.append(("random", list(y_true), list(y_pred)))
    cases.append(("single class", ["a", "a", "a"], ["a", "a", "a"]))
    cases.append(("label only in predictions", ["a", "a", "b", "b"], ["a", "c", "b", "b"]))
    cases.append(("class never predicted", ["a", "b", "c", "c", "a"], ["a", "a", "c", "c", "a"]))
    cases.append(("all wrong", ["a", "b", "a", "b"], ["b", "a", "b", "a"]))
    cases.append(("unicode order", ["\u00e9", "z", "\U0001F600", "\uff5e", "Z"], ["z", "z", "\uff5e", "\U0001F600", "\u00e9"]))
    out = []
    for name, t, p in cases:
        labels = sorted(set(t) | set(p))
        prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=labels, average=None)
        out.append({
            "name": name, "yTrue": t, "yPred": p,
            "labels": labels,
            "accuracy": accuracy_score(t, p),
            "macroF1": f1_score(t, p, average="macro"),
            "microF1": f1_score(t, p, average="micro"),
            "macroPrecision": precision_score(t, p, average="macro"),
            "macroRecall": recall_score(t, p, average="macro"),
            "weightedPrecision": precision_score(t, p, average="weighted"),
            "weightedRecall": recall_score(t, p, average="weighted"),
            "weightedF1": f1_score(t, p, average="weighted"),
            "precision": prec, "recall": rec, "f1": f1, "support": sup,
            "confusion": confusion_matrix(t, p),
        })
    return out


# ---------------------------------------------------------------- clustering
def scib_ari(a, b):
    """scib.metrics.ari native implementation (pd.crosstab replaced by np.unique inverse codes)."""
    def binom_sum(x, k=2):
        return scipy.special.binom(x, k).sum()
    n = len(a)
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    cont = np.zeros((ia.max() + 1 if n else 0, ib.max() + 1 if n else 0))
    np.add.at(cont, (ia, ib), 1)
    ai_sum = binom_sum(cont.sum(axis=0))
    bi_sum = binom_sum(cont.sum(axis=1))
    index = binom_sum(np.ravel(cont))
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_index = ai_sum * bi_sum / binom_sum(n, 2)
        max_index = 0.5 * (ai_sum + bi_sum)
        return float(np.float64(index - expected_index) / np.float64(max_index - expected_index))


def clustering_fixture(rng):
    cases = []
    a = rng.integers(0, 6, size=500)
    b = np.where(rng.random(500) < 0.6, (a * 2 + 1) % 8, rng.integers(0, 8, size=500))
    cases.append(("random 500", "int", a, b))
    sa = rng.choice(["alpha", "beta", "gamma", "delta"], size=200)
    sb = np.where(rng.random(200) < 0.7, sa, rng.choice(["alpha", "beta", "gamma", "x"], size=200))
    cases.append(("strings 200", "str", sa, sb))
    cases.append(("both single class", "int", np.zeros(7, dtype=int), np.full(7, 3)))
    cases.append(("one side single class (MI = 0)", "int", np.zeros(6, dtype=int), np.array([0, 1, 2, 0, 1, 2])))
    cases.append(("independent (MI = 0)", "int", np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])))
    cases.append(("all singletons both", "int", np.arange(50), np.arange(50)[::-1].copy()))
    cases.append(("singletons vs 3 classes", "int", np.arange(30), np.arange(30) % 3))
    cases.append(("identical", "int", a, a))
    cases.append(("empty", "int", np.zeros(0, dtype=int), np.zeros(0, dtype=int)))
    cases.append(("one sample", "int", np.array([4]), np.array([9])))
    cases.append(("negative and large codes", "int", np.array([-5, 2_000_000_000, -5, 7, 7, 7, 2_000_000_000, -5]),
                  np.array([1, 1, 2, 2, 3, 3, 3, 1])))
    big = rng.integers(0, 1000, size=3000)
    cases.append(("sparse contingency 3000 singletons vs 1000", "int", np.arange(3000), big))
    out = []
    for name, kind, x, y in cases:
        xs = x.tolist()
        ys = y.tolist()
        out.append({
            "name": name, "kind": kind, "a": xs, "b": ys,
            "nmi": normalized_mutual_info_score(x, y),
            "nmiReversed": normalized_mutual_info_score(y, x),
            "ariSklearn": adjusted_rand_score(x, y),
            "ariScib": scib_ari(x, y),
        })
    large = []
    for name, seed, n, ka, kb, agree in [("lcg 60k 50x40", 12345, 60_000, 50, 40, 70),
                                         ("lcg 60k 2x3", 777, 60_000, 2, 3, 90)]:
        x, y = lcg_labels(seed, n, ka, kb, agree)
        large.append({
            "name": name, "seed": seed, "n": n, "ka": ka, "kb": kb, "agreePercent": agree,
            "checksumA": int(x.sum()), "checksumB": int(y.sum()), "first": [x[:5].tolist(), y[:5].tolist()],
            "nmi": normalized_mutual_info_score(x, y),
            "ariSklearn": adjusted_rand_score(x, y),
            "ariScib": scib_ari(x, y),
        })
    return {"cases": out, "large": large}


# ---------------------------------------------------------------- silhouette
def first_seen(v):
    _, idx = np.unique(v, return_index=True)
    return v[np.sort(idx)]


def scib_silhouette_batch(emb, labels, batches, dist=None):
    """scib.metrics.silhouette_batch(scale=True, metric="euclidean"); dist: precomputed distances."""
    per = {}
    for group in first_seen(labels):
        mask = labels == group
        n_batches = len(np.unique(batches[mask]))
        if n_batches == 1 or n_batches == mask.sum():
            continue
        if dist is None:
            sil = silhouette_samples(emb[mask], batches[mask])
        else:
            sil = silhouette_samples(dist[np.ix_(mask, mask)], batches[mask], metric="precomputed")
        sil = [1 - abs(i) for i in sil]
        per[int(group)] = float(np.mean(sil))
    asw = float(np.mean(list(per.values()))) if per else float("nan")
    return asw, per


def scib_isolated_labels(labels, batches, iso_threshold):
    """scib get_isolated_labels (1.2.x, with the 'threshold == #batches' rule)."""
    pairs = sorted(set(zip(labels.tolist(), batches.tolist())))
    count = {}
    for lab, _ in pairs:
        count[lab] = count.get(lab, 0) + 1
    if iso_threshold is None:
        iso_threshold = min(count.values())
    if iso_threshold == len(np.unique(batches)):
        return iso_threshold, []
    return iso_threshold, sorted(l for l, c in count.items() if c <= iso_threshold)


def scib_isolated_labels_asw(emb, labels, batches, iso_threshold=None, dist=None, grouping="labels"):
    """scib isolated_labels(cluster=False): 'labels' = scib >= 1.1.6 / scib-metrics, 'isolated-vs-rest' = older scib."""
    threshold, iso = scib_isolated_labels(labels, batches, iso_threshold)
    X, metric = (emb, "euclidean") if dist is None else (dist, "precomputed")
    scores = {}
    if grouping == "labels" and iso:
        sil = silhouette_samples(X, labels, metric=metric)
        for lab in iso:
            scores[lab] = (float(np.mean(sil[labels == lab])) + 1) / 2
    elif iso:
        for lab in iso:
            scores[lab] = (silhouette_score(X, labels == lab, metric=metric) + 1) / 2
    score = float(np.mean(list(scores.values()))) if scores else float("nan")
    return {"threshold": threshold, "isolated": iso, "perLabel": [scores[l] for l in iso], "score": score}


def silhouette_fixture(rng):
    n, d = 300, 8
    # labels 0..2 large (label 2 only in batches 0 and 1), label 3 only in batch 0, label 4 two cells in 2 batches
    labels = np.concatenate([np.full(95, 0), np.full(95, 1), np.full(95, 2), np.full(13, 3), np.full(2, 4)])
    batches = np.concatenate([rng.integers(0, 3, 95), rng.integers(0, 3, 95), rng.integers(0, 2, 95),
                              np.zeros(13, dtype=int), np.array([1, 2])])
    perm = rng.permutation(n)
    labels, batches = labels[perm], batches[perm]
    centres = rng.normal(0, 2.0, size=(5, d))
    shifts = rng.normal(0, 0.7, size=(3, d))
    emb = (centres[labels] + shifts[batches] + rng.normal(0, 1.0, size=(n, d))).astype(np.float32)
    X64 = emb.astype(np.float64)
    D = cdist(X64, X64)  # direct Euclidean distances in float64
    k = 5
    sums = np.zeros((n, k))
    for c in range(k):
        sums[:, c] = D[:, labels == c].sum(axis=1)
    sil_direct = silhouette_samples(D, labels, metric="precomputed")
    sil_f32 = silhouette_samples(emb, labels)
    # singleton cluster: relabel one cell of label 0 as 5
    single = labels.copy()
    single[np.nonzero(labels == 0)[0][0]] = 5
    sil_single = silhouette_samples(D, single, metric="precomputed")
    asw_b, asw_b_per = scib_silhouette_batch(emb, labels, batches, dist=D)
    asw_b32, _ = scib_silhouette_batch(emb, labels, batches)
    # a labelling where every label is in every batch (isolated labels -> NaN); not stored, the
    # tests rebuild it: label i % 3, batch (i // 3) % 3
    full_labels = np.arange(n) % 3
    full_batches = (np.arange(n) // 3) % 3
    return {
        "n": n, "d": d, "x": emb.astype(np.float64).ravel(), "labels": labels, "batches": batches,
        "distanceSums": sums.ravel(),
        "silhouetteDirect": sil_direct,
        "silhouetteFloat32": sil_f32,
        "silhouetteScoreDirect": float(np.mean(sil_direct)),
        "silhouetteScoreFloat32": silhouette_score(emb, labels),
        "aswLabel": (float(np.mean(sil_direct)) + 1) / 2,
        "singletonLabels": single, "silhouetteSingleton": sil_single,
        "aswBatch": asw_b, "aswBatchPerLabel": {str(k_): v for k_, v in asw_b_per.items()},
        "aswBatchFloat32": asw_b32,
        "isolated": {
            "default": scib_isolated_labels_asw(emb, labels, batches, dist=D),
            "threshold2": scib_isolated_labels_asw(emb, labels, batches, iso_threshold=2, dist=D),
            "threshold3": scib_isolated_labels_asw(emb, labels, batches, iso_threshold=3, dist=D),
            "defaultFloat32": scib_isolated_labels_asw(emb, labels, batches),
            "vsRest": scib_isolated_labels_asw(emb, labels, batches, dist=D, grouping="isolated-vs-rest"),
            "vsRestThreshold2": scib_isolated_labels_asw(emb, labels, batches, iso_threshold=2, dist=D,
                                                         grouping="isolated-vs-rest"),
            "allInAllBatches": scib_isolated_labels_asw(emb, full_labels, full_batches, dist=D),
        },
    }


# ---------------------------------------------------------------- graph connectivity
def gc_reference(neighbors, labels, variant):
    n, k = neighbors.shape
    rows = np.repeat(np.arange(n), k)
    cols = neighbors.ravel()
    keep = cols >= 0
    A = csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(n, n))
    if variant == "scib":
        A = ((A + A.T) > 0).astype(np.float64)  # symmetric like scanpy connectivities
    per = []
    for lab in np.unique(labels):
        mask = labels == lab
        sub = A[mask][:, mask]
        _, comp = connected_components(sub, directed=True, connection="strong")
        if variant == "scib":
            _, weak = connected_components(A[mask][:, mask], directed=True, connection="weak")
            assert np.bincount(weak).max() == np.bincount(comp).max()
        per.append(np.bincount(comp).max() / mask.sum())
    return {"score": float(np.mean(per)), "perLabel": per}


def graph_fixture(rng):
    n, d, k = 200, 8, 15
    truth = rng.integers(0, 4, n)
    centres = rng.normal(0, 3.0, size=(4, d))
    X = centres[truth] + rng.normal(0, 1.0, size=(n, d))
    labels = np.where(rng.random(n) < 0.75, truth, rng.integers(0, 4, n))
    nbrs = NearestNeighbors(n_neighbors=k).fit(X).kneighbors(X, return_distance=False)
    out = {"n": n, "k": k, "neighbors": nbrs.ravel(), "labels": labels, "results": {}}
    for kk in (15, 5, 2):
        sub = np.ascontiguousarray(nbrs[:, :kk])
        out["results"][str(kk)] = {v: gc_reference(sub, labels, v) for v in ("scib", "scib-metrics")}
    # hand-written: a directed 3-cycle and a chain with missing entries and self loops
    hand_nb = np.array([[1, -1], [2, 1], [0, -1], [4, 3], [5, -1], [5, 5], [3, 0]])
    hand_lab = np.array([0, 0, 0, 1, 1, 1, 1])
    out["hand"] = {"n": 7, "k": 2, "neighbors": hand_nb.ravel(), "labels": hand_lab,
                   "results": {v: gc_reference(hand_nb, hand_lab, v) for v in ("scib", "scib-metrics")}}
    return out


# ---------------------------------------------------------------- reconstruction
def genemamba_bleu(candidate, reference, max_n=4):
    """GeneMamba eval_utils.bleu_score as described in evaluation.md section 8."""
    from collections import Counter

    def n_gram_counts(sequence, n):
        return Counter([tuple(sequence[i:i + n]) for i in range(len(sequence) - n + 1)])

    def modified_precision(candidate, reference, n):
        cc = n_gram_counts(candidate, n)
        rc = n_gram_counts(reference, n)
        overlap = sum(min(c, rc.get(g, 0)) for g, c in cc.items())
        total = sum(cc.values())
        return overlap / total if total > 0 else 0

    def brevity_penalty(candidate, reference):
        c, r = len(candidate), len(reference)
        if c > r:
            return 1
        elif c == 0:
            return 0
        return math.exp(1 - r / c)

    precisions = [modified_precision(candidate, reference, n) for n in range(1, max_n + 1)]
    if min(precisions) > 0:
        geometric_mean = math.exp(sum([math.log(p) for p in precisions]) / max_n)
    else:
        geometric_mean = 0
    return brevity_penalty(candidate, reference) * geometric_mean


def gene_ranks(inp, pred):
    """Rank vectors of reconstructionScores: first-occurrence positions, missing -> len(pred)."""
    first = {}
    for i, g in enumerate(pred):
        first.setdefault(g, i)
    seen, r_in, r_out = set(), [], []
    for i, g in enumerate(inp):
        if g in seen:
            continue
        seen.add(g)
        r_in.append(i)
        r_out.append(first.get(g, len(pred)))
    return r_in, r_out


def safe_corr(fn, a, b):
    if len(a) < 2:
        return float("nan")
    return float(fn(a, b)[0])


def reconstruction_fixture(rng):
    cases = []
    for t in range(8):
        L = int(rng.integers(20, 40))
        inp = rng.choice(np.arange(2, 200), size=L, replace=False).tolist()
        pred = list(inp)
        for _ in range(int(rng.integers(0, 6))):
            op = int(rng.integers(0, 4))
            if not pred:
                break
            i = int(rng.integers(0, len(pred)))
            if op == 0:
                pred[i] = int(rng.integers(2, 200))
            elif op == 1:
                j = int(rng.integers(0, len(pred)))
                pred[i], pred[j] = pred[j], pred[i]
            elif op == 2:
                del pred[i]
            else:
                pred.insert(i, int(rng.integers(2, 200)))
        if t == 6:
            pred = pred[: L // 2]  # truncated prediction
        cases.append((f"random {t}", inp, pred))
    cases += [
        ("identical", [5, 6, 7, 8, 9, 10], [5, 6, 7, 8, 9, 10]),
        ("both empty", [], []),
        ("empty prediction", [3, 4, 5], []),
        ("empty input", [], [3, 4, 5]),
        ("no n-gram matches", [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]),
        ("unigram matches only", [1, 2, 3, 4, 5], [5, 3, 1, 4, 2]),
        ("no 4-gram match", [1, 2, 3, 4, 5, 6], [1, 2, 3, 9, 4, 5, 6]),
        ("candidate shorter than reference", [1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8]),
        ("candidate longer than reference", [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5]),
        ("shorter than 4", [1, 2, 3], [1, 2, 3]),
        ("repeated tokens (clipping)", [7, 7, 7, 7, 8, 7, 7], [7, 7, 8, 7, 9, 7]),
        ("single gene", [4], [4]),
        ("reversed", list(range(10, 40)), list(range(39, 9, -1))),
    ]
    out = []
    for name, inp, pred in cases:
        r_in, r_out = gene_ranks(inp, pred)
        k = 10
        mx = max(len(inp), len(pred))
        ld = edit_distance(inp, pred)
        out.append({
            "name": name, "input": inp, "predicted": pred, "k": k,
            "levenshtein": ld,
            "normalizedLevenshtein": 1.0 if mx == 0 else 1 - ld / mx,
            "exactMatch": float("nan") if not inp else sum(1 for a, b in zip(inp, pred) if a == b) / len(inp),
            "bleuGeneMamba": genemamba_bleu(inp, pred),
            "bleuGeneMambaSwapped": genemamba_bleu(pred, inp),
            "bleuGeneMambaMax2": genemamba_bleu(inp, pred, max_n=2),
            "bleuNltk": float(sentence_bleu([inp], pred)),
            "bleuNltkSwapped": float(sentence_bleu([pred], inp)),
            "bleuNltkWeights2": float(sentence_bleu([inp], pred, weights=(0.5, 0.5))),
            "rankIn": r_in, "rankOut": r_out,
            "spearman": safe_corr(spearmanr, r_in, r_out),
            "pearson": safe_corr(pearsonr, r_in, r_out),
            "topKOverlap": len(set(inp[:k]) & set(pred[:k])) / k,
        })
    # correlation on general vectors (ties, constants, n = 2)
    corr = []
    x = np.round(rng.normal(0, 1, 40), 1)
    y = np.round(x * 0.5 + rng.normal(0, 1, 40), 1)
    vecs = [
        ("ties 40", x.tolist(), y.tolist()),
        ("continuous 100", rng.normal(0, 1, 100).tolist(), rng.normal(0, 1, 100).tolist()),
        ("constant a", [1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0]),
        ("n = 2", [1.0, 3.0], [5.0, 2.0]),
        ("n = 3", [1.0, 3.0, 2.0], [5.0, 2.0, 2.5]),
        ("large offset", (1e6 + rng.normal(0, 1, 30)).tolist(), rng.normal(0, 1, 30).tolist()),
    ]
    for name, a, b in vecs:
        corr.append({"name": name, "a": a, "b": b,
                     "rankA": rankdata(a), "rankB": rankdata(b),
                     "spearman": float(spearmanr(a, b)[0]), "pearson": float(pearsonr(a, b)[0])})
    return {"cases": out, "correlation": corr}


# ---------------------------------------------------------------- distributions
def distributions_fixture(rng):
    pos = np.clip(rng.normal(0.35, 0.25, 400), -1.2, 1.2)
    neg = rng.normal(0.0, 0.3, 600)
    extra = np.array([-1.0, 1.0, 0.2, -0.36, 0.96, 1.5, -2.0, 0.0])  # edges, exact bin edges, out of range
    pos = np.concatenate([pos, extra])
    neg = np.concatenate([neg, extra[::-1]])
    bins, lo, hi, eps = 50, -1.0, 1.0, 1e-10
    cp, edges = np.histogram(pos, bins=bins, range=(lo, hi))
    cq, _ = np.histogram(neg, bins=bins, range=(lo, hi))
    p = cp / cp.sum()
    q = cq / cq.sum()
    dist = {
        "euclidean": float(np.linalg.norm(p - q)),
        "kl": float(entropy(p + eps, q + eps)),
        "js": float(jensenshannon(p, q)),
        "posMean": float(np.mean(pos)), "posStd": float(np.std(pos)),
        "negMean": float(np.mean(neg)), "negStd": float(np.std(neg)),
    }
    cp20, edges20 = np.histogram(pos, bins=20, range=(-0.5, 0.7))
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos), dtype=int), np.zeros(len(neg), dtype=int)])
    tied = np.round(scores, 1)
    vec_a = rng.normal(0, 1, (5, 16))
    vec_b = rng.normal(0, 1, (5, 16))
    vec_a[4] = 0.0
    cos = [float(cosine_similarity(vec_a[i:i + 1], vec_b[i:i + 1])[0, 0]) for i in range(5)]
    return {
        "pos": pos, "neg": neg, "bins": bins, "range": [lo, hi], "eps": eps,
        "edges": edges, "countsPos": cp, "countsNeg": cq, "probPos": p, "probNeg": q,
        "distances": dist,
        "hist20": {"bins": 20, "range": [-0.5, 0.7], "edges": edges20, "counts": cp20},
        "rocAuc": float(roc_auc_score(labels, scores)),
        "rocAucTied": float(roc_auc_score(labels, tied)),
        "rocScoresTied": tied, "rocLabels": labels,
        "rocSmall": {"scores": [0.1, 0.4, 0.35, 0.8, 0.4], "labels": [0, 0, 1, 1, 1],
                     "auc": float(roc_auc_score([0, 0, 1, 1, 1], [0.1, 0.4, 0.35, 0.8, 0.4]))},
        "cosine": {"a": vec_a, "b": vec_b, "values": cos},
    }


# ---------------------------------------------------------------- aggregates
def aggregate_fixture():
    nan = float("nan")
    bio = [(0.71, 0.62, 0.55), (0.71, nan, 0.55), (nan, nan, nan)]
    batch = [(0.91, 0.95), (nan, 0.95)]
    return {
        "bio": [{"nmi": a, "ari": b, "aswLabel": c, "omit": float(np.nanmean([a, b, c])) if not all(map(math.isnan, (a, b, c))) else nan,
                 "propagate": float(np.mean([a, b, c]))} for a, b, c in bio],
        "batch": [{"aswBatch": a, "graphConnectivity": b, "omit": float(np.nanmean([a, b])),
                   "propagate": float(np.mean([a, b]))} for a, b in batch],
        "total": [{"bio": 0.66, "batch": 0.93, "total": 0.4 * 0.93 + 0.6 * 0.66}],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    fixture = {
        "_generator": "scripts/reference/eval_fixtures.py",
        "_versions": {"sklearn": sklearn.__version__, "scipy": scipy.__version__, "nltk": nltk.__version__,
                      "numpy": np.__version__},
        "classification": classification_fixture(np.random.default_rng(101)),
        "clustering": clustering_fixture(np.random.default_rng(202)),
        "silhouette": silhouette_fixture(np.random.default_rng(303)),
        "graph": graph_fixture(np.random.default_rng(404)),
        "reconstruction": reconstruction_fixture(np.random.default_rng(505)),
        "distributions": distributions_fixture(np.random.default_rng(606)),
        "aggregate": aggregate_fixture(),
    }
    text = json.dumps(clean(fixture), separators=(",", ":"), allow_nan=False)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    print(f"wrote {args.out} ({len(text) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
