"""The explorebench spine: training entry point, collection, logging, checkpoints, bench."""
import os

# One thread per run unless the user asks otherwise: BLAS pools must be capped before numpy loads
# (torch's own pool is set from the `threads` config key).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
