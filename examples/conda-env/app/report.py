import numpy as np
from scipy import stats

sample = np.random.default_rng(0).normal(size=1000)
print("mean", round(float(sample.mean()), 3), "normal test p", round(float(stats.normaltest(sample).pvalue), 3))
