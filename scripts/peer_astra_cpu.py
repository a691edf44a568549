"""The CPU peer for `tomodiff bench projector --case parallel2d`: ASTRA's 'line' projector
(pip install astra-toolbox; for the measurement only, not a test dependency), forward and
backprojection of a 512x512 slice to 360 views x 768 columns over 180 degrees. Median of 5 runs;
the PEER_JSON lines are what `tomodiff bench projector --peer` reads."""
import json
import time

import astra
import numpy as np

vol_geom = astra.create_vol_geom(512, 512)
angles = np.linspace(0, np.pi, 360, endpoint=False)
proj_geom = astra.create_proj_geom("parallel", 1.0, 768, angles)
proj_id = astra.create_projector("line", proj_geom, vol_geom)
x = np.zeros((512, 512), dtype=np.float32)
yy, xx = np.mgrid[-256:256, -256:256]
x[(xx / 200.0) ** 2 + (yy / 240.0) ** 2 < 1] = 1.0
rays = 360 * 768
for what in ("forward", "adjoint"):
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        if what == "forward":
            sid, sino = astra.create_sino(x, proj_id)
            astra.data2d.delete(sid)
        else:
            bid, back = astra.create_backprojection(sino, proj_id)
            astra.data2d.delete(bid)
        times.append(time.perf_counter() - t0)
    times.sort()
    s = times[len(times) // 2]
    print(f"astra line parallel2d {what:<8} cpu {s:8.3f} s  {rays / s / 1e6:8.2f} M rays/s")
    print("PEER_JSON " + json.dumps({"direction": what, "median_s": s, "min_s": times[0], "max_s": times[-1], "runs": len(times),
                                     "peer": f"astra {astra.__version__} 'line' (cpu)"}))
