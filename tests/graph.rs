//! Captured graphs (emu always, cuda when present): a replay does what the captured work did, with
//! the buffers' contents at replay time; the capture's rules are enforced; the sampler's network
//! pass replayed from a graph gives the same noise estimate, bit for bit, as the pass run as it
//! comes.
use tomodiff::diffusion::sampler::EpsPass;
use tomodiff::nn::{Arch, UNet, UNetConfig, Weights};
use tomodiff::ops::elementwise::axpy;
use tomodiff::{DType, Device, Error, Tensor};
mod common;
use common::{kernel_devices, rng, uniform};

#[test]
fn a_replay_reads_the_buffers_at_replay_time() {
    let mut r = rng("graph replay");
    for dev in kernel_devices("graph replay") {
        let n = 1000;
        let (a, b) = (uniform(&mut r, n, -1.0, 1.0), uniform(&mut r, n, -1.0, 1.0));
        let mut x = Tensor::from_f32(&a, &[n], DType::F32, &dev).unwrap();
        let mut y = Tensor::from_f32(&b, &[n], DType::F32, &dev).unwrap();
        // y += 2 x through a temporary made and dropped inside the capture.
        let (g, ()) = dev
            .capture(|| {
                let t = x.to_device(&dev)?;
                axpy(2.0, &t, &mut y)
            })
            .unwrap();
        assert!(!dev.capturing());
        assert_eq!(y.to_f32_vec().unwrap(), b, "{}: the capture ran the work", dev.name());
        unsafe { g.replay() }.unwrap();
        let once: Vec<f32> = (0..n).map(|i| b[i] + 2.0 * a[i]).collect();
        assert_eq!(y.to_f32_vec().unwrap(), once, "{}", dev.name());
        // New contents of x, written between replays, are what the next replay reads.
        let a2 = uniform(&mut r, n, -1.0, 1.0);
        x.buffer_mut().write(bytemuck::cast_slice(&a2)).unwrap();
        unsafe { g.replay() }.unwrap();
        let twice: Vec<f32> = (0..n).map(|i| once[i] + 2.0 * a2[i]).collect();
        assert_eq!(y.to_f32_vec().unwrap(), twice, "{}", dev.name());
    }
}

#[test]
fn capture_refuses_host_transfers_and_escaping_buffers() {
    for dev in kernel_devices("graph rules") {
        let x = Tensor::zeros(&[64], DType::F32, &dev).unwrap();
        let e = dev.capture(|| x.to_f32_vec()).unwrap_err();
        assert!(matches!(e, Error::Capture(_)) && e.to_string().contains("while capturing"), "{e}");
        let e = dev.capture(|| Tensor::from_f32(&[1.0; 8], &[8], DType::F32, &dev)).unwrap_err();
        assert!(e.to_string().contains("while capturing"), "{e}");
        let e = dev.capture(|| Tensor::zeros(&[8], DType::F32, &dev)).map(|_| ()).unwrap_err();
        assert!(e.to_string().contains("still alive"), "{e}");
        // A failed capture leaves the device usable, and captures do not nest.
        assert!(!dev.capturing());
        assert_eq!(x.to_f32_vec().unwrap(), vec![0.0; 64]);
        let e = dev.capture(|| dev.capture(|| Ok(())).map(|_| ())).unwrap_err();
        assert!(e.to_string().contains("already"), "{e}");
    }
    assert!(Device::Cpu.capture(|| Ok(())).is_err());
}

#[test]
fn a_graph_keeps_its_memory_until_dropped() {
    for dev in kernel_devices("graph memory") {
        let bytes = 3 << 20;
        let mut inside = 0;
        let (g, ()) = dev
            .capture(|| {
                let t = Tensor::zeros(&[bytes / 4], DType::F32, &dev)?;
                inside = t.buffer().addr();
                Ok(())
            })
            .unwrap();
        // While the graph lives, its block is not handed out again.
        let other = Tensor::zeros(&[bytes / 4], DType::F32, &dev).unwrap();
        assert_ne!(other.buffer().addr(), inside, "{}", dev.name());
        drop(g);
        drop(other);
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(Tensor::zeros(&[bytes / 4], DType::F32, &dev).unwrap());
        }
        assert!(seen.iter().any(|t| t.buffer().addr() == inside), "{}: the block came back to the pool", dev.name());
        // Blocks from the pool are zeroed like fresh ones.
        assert!(seen.iter().all(|t| t.to_f32_vec().unwrap().iter().all(|v| *v == 0.0)));
    }
}

#[test]
fn the_replayed_network_pass_matches_the_pass_run_as_it_comes() {
    let mut cfg = UNetConfig::tiny();
    cfg.patch = [8, 8, 8];
    cfg.model_channels = 8;
    let arch = Arch::new(&cfg);
    let w = Weights::random(&arch, 3).unwrap();
    let mut r = rng("graph eps pass");
    let dims = [9usize, 8, 7];
    let n: usize = dims.iter().product();
    let vol = uniform(&mut r, n, -1.5, 1.5);
    for dev in kernel_devices("graph eps pass") {
        let net = UNet::new(arch.clone(), &w, &dev).unwrap();
        let x = Tensor::from_f32(&vol, &dims, DType::F32, &dev).unwrap();
        let mut eager = EpsPass::new(&net, &dims, 5, false).unwrap();
        let mut graph = EpsPass::new(&net, &dims, 5, true).unwrap();
        // 12 patches per tiling: batches of 5, 5 and 2.
        let mut e1 = Tensor::zeros(&dims, DType::F32, &dev).unwrap();
        let mut e2 = Tensor::zeros(&dims, DType::F32, &dev).unwrap();
        for (k, (t, offset)) in [(900, [0, 0, 0]), (500, [3, 7, 1]), (300, [1, 1, 1])].into_iter().enumerate() {
            e2.buffer_mut().write(bytemuck::cast_slice(&vec![f32::NAN; n])).unwrap();
            eager.run(&net, &x, t, offset, &mut e1).unwrap();
            graph.run(&net, &x, t, offset, &mut e2).unwrap();
            assert_eq!(graph.replaying(), k > 0, "{}: pass {k}", dev.name());
            let (a, b) = (e1.to_f32_vec().unwrap(), e2.to_f32_vec().unwrap());
            assert!(a.iter().all(|v| v.is_finite()));
            assert_eq!(a, b, "{} t={t}: replay differs", dev.name());
        }
        assert!(graph.fallback.is_none(), "{:?}", graph.fallback);
        // Another output volume: captured anew for its address, same values.
        let mut e3 = Tensor::zeros(&dims, DType::F32, &dev).unwrap();
        graph.run(&net, &x, 300, [1, 1, 1], &mut e3).unwrap();
        assert_eq!(e3.to_f32_vec().unwrap(), e1.to_f32_vec().unwrap(), "{}", dev.name());
    }
}

/// The emulated pool (the same pool as cuda's): blocks are reused, the smallest fitting block
/// serves a request down to half its size, and the figures add up. On a thread of its own, whose
/// pool starts empty.
#[test]
fn the_pool_reuses_blocks_and_counts_them() {
    std::thread::spawn(|| {
        let dev = Device::Emu;
        const MIB: usize = 1 << 20;
        let buf = |bytes: usize| Tensor::zeros(&[bytes / 4], DType::F32, &dev).unwrap();
        let stats = || dev.memory_stats().unwrap();
        let a = buf(4 * MIB);
        let a_addr = a.buffer().addr();
        drop(a);
        assert_eq!((stats().allocated, stats().in_use, stats().peak_in_use), (4 * MIB, 0, 4 * MIB));
        let b = buf(3 * MIB); // class 4 MiB: a's block
        assert_eq!((b.buffer().addr(), stats().allocated), (a_addr, 4 * MIB));
        let c = buf(3 * MIB / 2); // class 2 MiB: nothing free, a fresh block
        let c_addr = c.buffer().addr();
        assert_eq!((stats().allocated, stats().in_use), (6 * MIB, 6 * MIB));
        drop((b, c));
        dev.reset_peak_memory();
        let d = buf(2 * MIB); // the smallest that fits: c's block
        let e = buf(2 * MIB); // then a's, twice its size
        assert_eq!((d.buffer().addr(), e.buffer().addr()), (c_addr, a_addr));
        let f = buf(MIB); // nothing free: fresh
        assert_eq!((stats().allocated, stats().in_use, stats().peak_in_use), (7 * MIB, 7 * MIB, 7 * MIB));
        assert!(f.to_f32_vec().unwrap().iter().all(|v| *v == 0.0) && e.to_f32_vec().unwrap().iter().all(|v| *v == 0.0));
    })
    .join()
    .unwrap();
}
