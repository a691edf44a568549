"""The peer for `tomodiff bench gemm`: torch.matmul in bf16 (cuBLAS) on the same n^3 problem,
timed with CUDA events the same way. Prints one line in the format of tomodiff's bench."""
import sys

import torch

n = int(sys.argv[1]) if len(sys.argv) > 1 else 4096
a = torch.rand(n, n, device="cuda", dtype=torch.bfloat16) * 2 - 1
b = torch.rand(n, n, device="cuda", dtype=torch.bfloat16) * 2 - 1
c = torch.matmul(a, b)
torch.cuda.synchronize()
times = []
total = 0.0
while total < 0.5:
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    c = torch.matmul(a, b)
    e.record()
    e.synchronize()
    t = s.elapsed_time(e) / 1e3
    times.append(t)
    total += t
mean = sum(times) / len(times)
print(f"torch gemm {n}^3 bf16 {torch.cuda.get_device_name()}: {mean * 1e3:.3f} ms  {2 * n**3 / mean / 1e12:.1f} TFLOP/s")
