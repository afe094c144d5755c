#!/usr/bin/python3
"""The scikit-learn side of `pnpm bench:eval`: the same silhouette (cell-type ASW) and KMeans NMI/ARI
that gm computes, on the same embedding (float32 .npy) and labels (int32 .npy). Prints one JSON line.

    /usr/bin/python3 scripts/bench/eval_sklearn.py X.npy labels.npy
"""
import json
import sys
import time

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_samples

X = np.load(sys.argv[1])
y = np.load(sys.argv[2])
t = time.perf_counter()
s = silhouette_samples(X, y)  # sklearn chunks the n^2 distances (working_memory 1 GiB)
asw = (float(np.mean(s)) + 1) / 2
t_sil = time.perf_counter() - t
t = time.perf_counter()
k = len(np.unique(y))
km = KMeans(n_clusters=k, n_init=1, max_iter=300, random_state=0).fit(X)  # scib-metrics' settings
nmi = normalized_mutual_info_score(y, km.labels_)
ari = adjusted_rand_score(y, km.labels_)
t_km = time.perf_counter() - t
print(json.dumps({"asw_label": asw, "nmi": nmi, "ari": ari, "silhouette_s": t_sil, "kmeans_s": t_km}))
