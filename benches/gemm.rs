//! `cargo bench --bench gemm`: the same measurement as `tomodiff bench gemm`.
fn main() -> tomodiff::Result<()> {
    let mut devs = vec![tomodiff::Device::Cpu];
    if let Ok(n) = tomodiff::device::cuda_device_count() {
        for i in 0..n {
            devs.push(tomodiff::Device::cuda(i)?);
        }
    }
    for dev in &devs {
        let n = if dev.runs_kernels() { 4096 } else { 1024 };
        println!("{}", tomodiff::bench::gemm(dev, n)?.line());
    }
    Ok(())
}
