"""Shared test setup. Tests run on tiny random configs on 2 CPU cores.

One intra-op thread for every test: tiny models run thousands of microsecond-sized ops, and on a 2-core machine
a second thread mostly waits for the busy core (measured 30-100x slower per op under load). One thread is also
deterministic run to run.
"""

from __future__ import annotations

import torch

torch.set_num_threads(1)
