"""Learning sanity on HalfCheetah-v5 (slow: run with `pytest -m slow`)."""
import numpy as np
import pytest

from tests.conftest import read_progress, train_in_process


@pytest.mark.slow
def test_ppo_half_cheetah_300k_beats_random(tmp_path):
    """CleanRL's PPO defaults; a random policy scores about -280 per 1000-step episode."""
    assert train_in_process(tmp_path, "agent=ppo", "env=half_cheetah", "total_env_steps=301056") == 0
    rows = read_progress(tmp_path)
    final = np.mean([float(r["return_ext_mean"]) for r in rows[-10:] if r["return_ext_mean"]])
    print(f"PPO HalfCheetah-v5 final return (last 10 iterations): {final:.1f}")
    assert final > 1000


@pytest.mark.slow
def test_trpo_half_cheetah_improves_over_200k(tmp_path):
    """rllab's TRPO settings with batch 5000 (40 iterations). rllab-style TRPO is slow on
    HalfCheetah: at 200k steps the control cost of the initial std-1 policy (~ -360 per
    1000-step episode) still dominates, so this asserts a clear upward trend, not a score."""
    assert train_in_process(tmp_path, "agent=trpo", "env=half_cheetah", "total_env_steps=200000") == 0
    returns = [float(r["return_ext_mean"]) for r in read_progress(tmp_path) if r["return_ext_mean"]]
    first, last = np.mean(returns[:5]), np.mean(returns[-5:])
    slope = np.polyfit(np.arange(len(returns)), returns, 1)[0]
    print(f"TRPO HalfCheetah-v5 return: first 5 evaluations {first:.1f}, last 5 {last:.1f}, slope {slope:.2f}")
    assert last > first + 30 and slope > 0
