#!/usr/bin/env python3
"""Times Google dp-accounting 0.6.0 (pip install dp-accounting==0.6.0) on the
run benches/benches/accountant.rs measures, for docs/benchmarks.md."""
import time
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as rdp
from dp_accounting.pld import pld_privacy_accountant as pld
q, s, d = 256/60000, 1.1, 1e-5
for steps in (14062, 100000):
    ev = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(s))
    for name, mk in (("rdp", lambda: rdp.RdpAccountant()), ("pld", lambda: pld.PLDAccountant(value_discretization_interval=1e-4))):
        ts = []
        for _ in range(5):
            t = time.perf_counter(); a = mk(); a.compose(ev, steps); e = a.get_epsilon(d); ts.append(time.perf_counter() - t)
        ts.sort(); print(name, steps, e, "median %.1f ms" % (ts[2]*1000))
