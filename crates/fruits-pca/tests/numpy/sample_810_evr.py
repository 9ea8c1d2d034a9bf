"""numpy's explained variance ratios of the standardised sample-810 features, as the notebook's
StandardScaler + PCA compute them; tests/sample_810.rs compares fruits-pca with this file.

    /tmp/pil/bin/pip install numpy
    /tmp/pil/bin/python crates/fruits-pca/tests/numpy/sample_810_evr.py ../shared \
        crates/fruits-pca/tests/numpy/sample-810-evr.npy
"""
import sys

import numpy as np

x = np.load(f"{sys.argv[1]}/reference/keras-mobilenet-v2/sample-810/features.npy").astype(np.float64)
std = x.std(axis=0, ddof=1)
z = np.where(std > 0, (x - x.mean(axis=0)) / np.where(std > 0, std, 1), 0.0)
eigenvalues = np.linalg.eigvalsh(np.cov(z, rowvar=False))[::-1]
np.save(sys.argv[2], eigenvalues / eigenvalues.sum())
