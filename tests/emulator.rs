//! The execution model: warp collectives, 3D indices, shared memory, barriers, atomics and
//! tensor-core tiles give what CUDA's rules say, on the emulator and (when present) a real GPU.
//! Expected values are computed here from the rules, independently of both.
mod common;
use common::*;
use tomodiff::device::{Launch, MAX_SHARED_BYTES};
use tomodiff::{DType, Device, Error, Tensor};

fn ints(v: &[i32], dev: &Device) -> tomodiff::device::Buffer {
    dev.upload(bytemuck::cast_slice(v)).unwrap()
}
fn read_ints(b: &tomodiff::device::Buffer) -> Vec<i32> {
    bytemuck::cast_slice(&b.read().unwrap()).to_vec()
}

#[test]
fn warp_shuffles_and_votes() {
    let mut rng = rng("warp");
    let n = 64; // two warps
    for dev in kernel_devices("warp") {
        let input: Vec<i32> = (0..n).map(|_| rand::Rng::random_range(&mut rng, 0..1000)).collect();
        let inb = ints(&input, &dev);
        let out = ints(&vec![-7; n * 8], &dev);
        unsafe { Launch::new("selftest_warp").unwrap().block([n as u32, 1, 1]).buf(&inb).buf(&out).launch(&dev) }.unwrap();
        let got = read_ints(&out);
        for t in 0..n {
            let (w, lane) = (t / 32 * 32, t % 32);
            let at = |l: usize| input[w + l];
            let warp = &input[w..w + 32];
            let ballot = warp.iter().enumerate().fold(0u32, |m, (l, v)| m | (((v & 1) as u32) << l));
            let want = [
                at((lane * 7 + 3) % 32),
                at(lane ^ 5),
                if lane + 3 < 32 { at(lane + 3) } else { at(lane) },
                if lane >= 2 { at(lane - 2) } else { at(lane) },
                at((lane & !7) + 1),
                ballot as i32,
                warp.iter().any(|&v| v > 900) as i32,
                warp.iter().all(|&v| v >= 0) as i32,
            ];
            assert_eq!(&got[t * 8..t * 8 + 8], &want, "{} thread {t}", dev.name());
        }
    }
}

#[test]
fn blocks_shared_memory_barriers_atomics() {
    let mut rng = rng("block");
    let (grid, block) = ([2u32, 3, 2], [8u32, 4, 2]);
    let nt = 64usize;
    let total = 12 * nt;
    for dev in kernel_devices("block") {
        let input = uniform(&mut rng, total, -1.0, 1.0);
        let inb = Tensor::from_f32(&input, &[total], DType::F32, &dev).unwrap();
        let out = Tensor::full(&[total], f32::NAN, DType::F32, &dev).unwrap();
        let fsum = Tensor::zeros(&[1], DType::F32, &dev).unwrap();
        let counters = ints(&[0, -1, 0, -1, 0], &dev);
        unsafe { Launch::new("selftest_block")
            .unwrap()
            .grid(grid)
            .block(block)
            .shared_bytes((nt * 4) as u32)
            .buf(inb.buffer())
            .buf(out.buffer())
            .buf(fsum.buffer())
            .buf(&counters)
            .launch(&dev) }
            .unwrap();
        let got = out.to_f32_vec().unwrap();
        for b in 0..12 {
            for t in 0..nt {
                let want = input[b * nt + nt - 1 - t] + 2.0 * input[b * nt + (t + 1) % nt];
                assert_eq!(got[b * nt + t], want, "{} block {b} thread {t}", dev.name());
            }
        }
        let s: f32 = input.iter().sum();
        let gs = fsum.to_f32_vec().unwrap()[0];
        assert!((gs - s).abs() < 1e-3, "atomicAdd f32: {gs} vs {s}");
        let c = read_ints(&counters);
        assert_eq!(c[0], total as i32, "atomicAdd i32");
        assert_eq!(c[1], total as i32 - 1, "atomicMax");
        assert_eq!(c[2], 3 * total as i32, "atomicAdd u32");
        assert!((0..12).contains(&c[3]), "atomicCAS winner {}", c[3]);
        assert_eq!(c[4], 1, "exactly one atomicCAS wins");
    }
}

#[test]
fn tensor_core_tile_row_and_col_major() {
    let mut rng = rng("tc");
    for dev in kernel_devices("tc") {
        let a = Tensor::from_f32(&uniform(&mut rng, 256, -1.0, 1.0), &[16, 16], DType::BF16, &dev).unwrap();
        let b = Tensor::from_f32(&uniform(&mut rng, 256, -1.0, 1.0), &[16, 16], DType::BF16, &dev).unwrap();
        let d = Tensor::full(&[16, 16], f32::NAN, DType::F32, &dev).unwrap();
        unsafe { Launch::new("selftest_tc").unwrap().block([32, 1, 1]).buf(a.buffer()).buf(b.buffer()).buf(d.buffer()).launch(&dev) }.unwrap();
        let (av, bv) = (a.to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
        let mut want = vec![0f32; 256];
        for i in 0..16 {
            for j in 0..16 {
                // b is column-major: element (k, j) at j * 16 + k.
                want[i * 16 + j] = 1.0 + (0..16).map(|k| av[i * 16 + k] * bv[j * 16 + k]).sum::<f32>();
            }
        }
        assert_close(&format!("tc {}", dev.name()), &d.to_f32_vec().unwrap(), &want, |_| 1e-5);
    }
}

#[test]
fn divergent_barrier_is_an_error_and_the_emulator_recovers() {
    let dev = Device::Emu;
    let out = ints(&[0; 64], &dev);
    let e = unsafe { Launch::new("selftest_divergent_barrier").unwrap().block([64, 1, 1]).buf(&out).launch(&dev) }.unwrap_err();
    assert!(e.to_string().contains("barrier deadlock"), "{e}");
    // The next launch starts from a clean scheduler.
    let x = Tensor::from_f32(&[1.0, 2.0, 3.0], &[3], DType::F32, &dev).unwrap();
    let mut y = Tensor::full(&[3], f32::NAN, DType::F32, &dev).unwrap();
    tomodiff::ops::elementwise::scale(2.0, &x, &mut y).unwrap();
    assert_eq!(y.to_f32_vec().unwrap(), vec![2.0, 4.0, 6.0]);
}

#[test]
fn bad_launches_are_errors() {
    let dev = Device::Emu;
    let buf = ints(&[0; 4], &dev);
    let launch = |block: [u32; 3], smem: u32| {
        unsafe { Launch::new("selftest_divergent_barrier").unwrap().block(block).shared_bytes(smem).buf(&buf).launch(&dev) }.unwrap_err().to_string()
    };
    assert!(launch([1025, 1, 1], 0).contains("1025 threads"));
    assert!(launch([32, 32, 2], 0).contains("2048 threads"));
    assert!(launch([0, 1, 1], 0).contains("0 threads"));
    assert!(launch([32, 1, 1], MAX_SHARED_BYTES + 1).contains("shared memory"));
    assert!(matches!(Launch::new("no_such_kernel"), Err(Error::UnknownKernel(_))));
    let e = unsafe { Launch::new("axpy_f32").unwrap().i64(1).buf(&buf).launch(&dev) }.unwrap_err().to_string();
    assert!(e.contains("2 arguments given, the kernel takes 4"), "{e}");
    let e = unsafe { Launch::new("axpy_f32").unwrap().i32(1).f32(1.0).buf(&buf).buf(&buf).launch(&dev) }.unwrap_err().to_string();
    assert!(e.contains("long long n"), "{e}");
    let e = unsafe { Launch::new("upsample2_bf16").unwrap().buf(&buf).buf(&buf).i32s(&[1, 1usize << 33, 1, 1, 1]).launch(&dev) }.unwrap_err().to_string();
    assert!(e.contains("exceeds a 32-bit int"), "{e}");
    let cpu = Device::Cpu.alloc(16).unwrap();
    let e = unsafe { Launch::new("selftest_divergent_barrier").unwrap().block([1, 1, 1]).buf(&cpu).launch(&dev) }.unwrap_err().to_string();
    assert!(e.contains("buffer on cpu"), "{e}");
}
