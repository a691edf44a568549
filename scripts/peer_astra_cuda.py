"""The GPU peer for `tomodiff bench projector --case cone`: ASTRA's CUDA cone-beam projector
(pip install astra-toolbox; for the measurement only, not a test dependency), forward and
backprojection of a 512x512x256 volume (1 mm voxels) to 360 views of 512x768 (1.2 mm pixels),
source 1000 mm and detector 500 mm from the centre, over 360 degrees: tomodiff's cone case.
ASTRA's create_sino3d_gpu and create_backprojection3d_gpu take and return host arrays, so its
times include the host<->device copies (0.27 GB volume, 0.57 GB projections); tomodiff's do not.
Best of 3 after one warm-up. Prints lines like tomodiff's bench."""
import json
import time

import astra
import numpy as np

nz, ny, nx = 256, 512, 512
rows, cols, views = 512, 768, 360
vol_geom = astra.create_vol_geom(ny, nx, nz)
angles = np.linspace(0, 2 * np.pi, views, endpoint=False)
proj_geom = astra.create_proj_geom("cone", 1.2, 1.2, rows, cols, angles, 1000.0, 500.0)
z, y, x = np.mgrid[-nz // 2:nz // 2, -ny // 2:ny // 2, -nx // 2:nx // 2].astype(np.float32)
vol = (((x / 200.0) ** 2 + (y / 240.0) ** 2 + (z / 110.0) ** 2) < 1).astype(np.float32)
del x, y, z
rays = views * rows * cols
sino = None
for what in ("forward", "adjoint"):
    best = []
    for i in range(4):
        t0 = time.perf_counter()
        if what == "forward":
            sid, sino = astra.create_sino3d_gpu(vol, proj_geom, vol_geom)
            astra.data3d.delete(sid)
        else:
            bid, back = astra.create_backprojection3d_gpu(sino, proj_geom, vol_geom)
            astra.data3d.delete(bid)
        if i:
            best.append(time.perf_counter() - t0)
    s = min(best)
    print(f"astra cone {what} cuda {s:8.3f} s  {rays / s / 1e6:8.2f} M rays/s (with host<->device copies)")
    print("PEER_JSON " + json.dumps({"direction": what, "median_s": sorted(best)[len(best) // 2], "min_s": min(best), "max_s": max(best),
                                     "runs": len(best), "peer": f"astra {astra.__version__} cone (cuda, with host<->device copies)"}))
