//! The sampler's algebra with models whose answers are known: stitching with an identity model,
//! and sampling Gaussian data with its exact denoiser, whose output statistics are closed-form.
use tomodiff::diffusion::sampler::{predict_eps, sample, timesteps, EpsModel, SamplerOptions};
use tomodiff::diffusion::schedule::Schedule;
use tomodiff::diffusion::tail_mean::TailMean;
use tomodiff::nn::{ContextMode, Prediction};
use tomodiff::{DType, Device, Result, Tensor};
mod common;

/// eps = channel 0 (the noisy patch) when `gauss` is None; else the exact E[eps | x_t] for data
/// x0 ~ N(mu, s^2) per voxel: sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab s^2 + 1 - ab).
struct Analytic {
    dev: Device,
    gauss: Option<(f64, f64)>,
    sched: Schedule,
    /// Answer v = sqrt(ab) eps - sqrt(1 - ab) E[x0 | x_t] instead of eps (Gaussian data only).
    pred: Prediction,
}

impl EpsModel for Analytic {
    fn device(&self) -> &Device {
        &self.dev
    }
    fn act_dtype(&self) -> DType {
        // Kernel devices assemble bf16 patches.
        if self.dev.runs_kernels() { DType::BF16 } else { DType::F32 }
    }
    fn patch(&self) -> [usize; 3] {
        [8, 8, 8]
    }
    fn context_mode(&self) -> ContextMode {
        ContextMode::Trilinear
    }
    fn prediction(&self) -> Prediction {
        self.pred
    }
    fn eps(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (xv, tv) = (x.to_f32_vec()?, t.to_f32_vec()?);
        let per = 512;
        let out: Vec<f32> = xv
            .chunks(5)
            .enumerate()
            .map(|(i, v)| match self.gauss {
                None => v[0],
                Some((mu, s)) => {
                    let ab = self.sched.abar[tv[i / per] as usize];
                    let (sa, sb) = (ab.sqrt(), (1.0 - ab).sqrt());
                    let eps = sb * (v[0] as f64 - sa * mu) / (ab * s * s + 1.0 - ab);
                    let x0 = (v[0] as f64 - sb * eps) / sa;
                    (if self.pred == Prediction::V { sa * eps - sb * x0 } else { eps }) as f32
                }
            })
            .collect();
        Tensor::from_f32(&out, &[tv.len(), 8, 8, 8, 1], DType::F32, &self.dev)
    }
}

#[test]
fn stitching_returns_each_voxel_from_its_patch() {
    let m = Analytic { dev: Device::Cpu, gauss: None, sched: Schedule::default(), pred: Prediction::Eps };
    let dims = [13, 9, 20];
    let x: Vec<f32> = (0..13 * 9 * 20).map(|i| i as f32 * 0.01 - 5.0).collect();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
    let xt = Tensor::from_f32(&x, &dims, DType::F32, &Device::Cpu).unwrap();
    for batch in [1, 7, 100] {
        let mut eps = Tensor::full(&dims, f32::NAN, DType::F32, &Device::Cpu).unwrap();
        predict_eps(&m, &xt, 500, batch, &mut rng, &mut eps).unwrap();
        assert_eq!(eps.to_f32_vec().unwrap(), x);
    }
}

#[test]
fn timesteps_span_the_schedule() {
    let t = timesteps(50, 999);
    assert_eq!((t.len(), t[0], t[49]), (50, 999, 0));
    assert!(t.windows(2).all(|w| w[0] > w[1]));
    // A late start with more steps than timesteps: each timestep once.
    let t = timesteps(50, 20);
    assert_eq!((t.len(), t[0], *t.last().unwrap()), (21, 20, 0));
    assert!(t.windows(2).all(|w| w[0] > w[1]));
}

/// Mean and standard deviation of the sampler's output for Gaussian data, in closed form: with
/// the exact denoiser every update is linear in x plus independent noise, so per voxel
/// m' = A m + B and v' = A^2 v + sigma^2 through the same steps and rounds. `dc` = (lambda, y):
/// a data-consistency hook x0 <- lambda x0 + (1 - lambda) y after Tweedie, eps kept. `x_init`:
/// the start is sqrt(ab) x_init + sqrt(1 - ab) z at opts.t_start instead of pure noise.
///
/// `average_below`: the hook's `TailMean` (tomodiff::diffusion::tail_mean) sums the estimates
/// before the hook at t <= it, and the last pass hands the hook their mean. Tracked as the sum S's
/// mean and variance and its covariance with x, which each update of x scales.
fn expected(opts: &SamplerOptions, mu: f64, s: f64, dc: (f64, f64), x_init: Option<f64>, average_below: Option<usize>) -> (f64, f64) {
    let sched = Schedule::default();
    let ts = timesteps(opts.steps, opts.t_start);
    let ab0 = sched.abar[opts.t_start];
    let (mut m, mut v) = match x_init {
        Some(x) => (ab0.sqrt() * x, 1.0 - ab0),
        None => (0.0f64, 1.0f64),
    };
    let (mut sum_m, mut sum_v, mut cov, mut count) = (0.0f64, 0.0f64, 0.0f64, 0usize);
    for (i, &t) in ts.iter().enumerate() {
        let ab = sched.abar[t];
        let k = (1.0 - ab).sqrt() / (ab * s * s + 1.0 - ab);
        // eps = k (x - sqrt(ab) mu); x0 = alpha_pre x + beta_pre before the hook, alpha x + beta after
        let (alpha_pre, beta_pre) = ((1.0 - (1.0 - ab).sqrt() * k) / ab.sqrt(), (1.0 - ab).sqrt() * k * mu);
        let (alpha, beta) = (dc.0 * alpha_pre, dc.0 * beta_pre + (1.0 - dc.0) * dc.1);
        for round in 0..opts.rounds {
            if average_below.is_some_and(|b| t <= b) {
                sum_v += alpha_pre * alpha_pre * v + 2.0 * alpha_pre * cov;
                cov += alpha_pre * v;
                sum_m += alpha_pre * m + beta_pre;
                count += 1;
            }
            if i + 1 == ts.len() && round + 1 == opts.rounds {
                if count > 1 {
                    let n = count as f64;
                    return (dc.0 * sum_m / n + (1.0 - dc.0) * dc.1, dc.0.abs() * sum_v.sqrt() / n);
                }
                return (alpha * m + beta, alpha.abs() * v.sqrt());
            }
            if round + 1 < opts.rounds {
                m = ab.sqrt() * (alpha * m + beta);
                v = ab * alpha * alpha * v + (1.0 - ab);
                cov *= ab.sqrt() * alpha;
            } else {
                let ab_s = sched.abar[ts[i + 1]];
                let sigma = opts.eta * ((1.0 - ab_s) / (1.0 - ab)).sqrt() * (1.0 - ab / ab_s).sqrt();
                let c = (1.0 - ab_s - sigma * sigma).sqrt();
                let a = ab_s.sqrt() * alpha + c * k;
                let b = ab_s.sqrt() * beta - c * k * ab.sqrt() * mu;
                m = a * m + b;
                v = a * a * v + sigma * sigma;
                cov *= a;
            }
        }
    }
    unreachable!()
}

#[test]
fn gaussian_data_is_sampled_with_its_statistics() {
    let (mu, s) = (0.3f64, 0.5f64);
    let m = Analytic { dev: Device::Cpu, gauss: Some((mu, s)), sched: Schedule::default(), pred: Prediction::Eps };
    let dims = [24, 24, 24];
    // A v-predicting model with the same denoiser samples the same volume.
    let v = Analytic { dev: Device::Cpu, gauss: Some((mu, s)), sched: Schedule::default(), pred: Prediction::V };
    let mut first: Vec<f32> = vec![];
    for (m, eta, rounds) in [(&m, 0.85, 1), (&m, 0.0, 1), (&m, 1.0, 2), (&v, 0.85, 1)] {
        let opts = SamplerOptions { steps: 50, eta, rounds, batch: 64, seed: 9, clip_x0: false, t_start: 999, graph: true };
        let mut passes = 0;
        let (out, _) = sample(m, dims, &opts, None, |_, _| Ok(()), |p, _| passes = p).unwrap();
        assert_eq!(passes, 50 * rounds);
        if m.pred == Prediction::V {
            let d = out.iter().zip(&first).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-3, "v and eps models of one denoiser sample {d} apart");
        } else if first.is_empty() {
            first = out.clone();
        }
        let n = out.len() as f64;
        let mean = out.iter().map(|v| *v as f64).sum::<f64>() / n;
        let std = (out.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let (em, es) = expected(&opts, mu, s, (1.0, 0.0), None, None);
        eprintln!("eta {eta}, rounds {rounds}: mean {mean:.4} (closed form {em:.4}, data {mu}), std {std:.4} (closed form {es:.4}, data {s})");
        // 13824 voxels: sampling error about 0.005 on the mean and 0.6% on the std.
        assert!((mean - em).abs() < 0.02, "eta {eta}: mean {mean} vs {em}");
        assert!((std / es - 1.0).abs() < 0.03, "eta {eta}: std {std} vs {es}");
        // Without recurrent rounds the sampler lands near the data distribution itself (50 DDIM
        // steps shrink the spread by under 10%); re-noising from the posterior mean shrinks it more.
        assert!((em - mu).abs() < 0.02, "closed form mean {em}");
        if rounds == 1 {
            assert!((es / s - 1.0).abs() < 0.1, "closed form std {es}");
        }
    }
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    (mean, (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt())
}

/// The hook acts where reconstruction's data consistency acts: a linear pull of x0 towards a
/// value (what CG does with A = I) moves the output exactly as the closed form says, with
/// recurrent rounds, and from a noised initial volume at a late start.
#[test]
fn data_consistency_hook_and_late_start_follow_the_closed_form() {
    let mut devices = vec![Device::Cpu];
    devices.extend(common::kernel_devices("sampler"));
    for dev in devices {
        hook_and_late_start_on(dev);
    }
}

fn hook_and_late_start_on(dev: Device) {
    let (mu, s) = (0.3f64, 0.5f64);
    let m = Analytic { dev: dev.clone(), gauss: Some((mu, s)), sched: Schedule::default(), pred: Prediction::Eps };
    let dims = [24, 24, 24];
    let (lambda, y) = (0.6f64, -0.4f64);
    let hook = |x0: &mut Tensor, _t: usize| -> Result<()> {
        tomodiff::ops::elementwise::affine_inplace(lambda as f32, ((1.0 - lambda) * y) as f32, x0)
    };
    for rounds in [1, 2] {
        let opts = SamplerOptions { steps: 20, eta: 0.85, rounds, batch: 64, seed: 4, clip_x0: false, t_start: 999, graph: true };
        let (out, stats) = sample(&m, dims, &opts, None, hook, |_, _| {}).unwrap();
        assert_eq!(stats.passes, 20 * rounds);
        let (mean, std) = mean_std(&out);
        let (em, es) = expected(&opts, mu, s, (lambda, y), None, None);
        eprintln!("{} rounds {rounds}: mean {mean:.4} vs {em:.4}, std {std:.4} vs {es:.4}", dev.name());
        assert!((mean - em).abs() < 0.02 && (std / es - 1.0).abs() < 0.03, "rounds {rounds}: {mean} {std} vs {em} {es}");
        // The pull is visible: without it the mean is the data's.
        assert!((em - mu).abs() > 0.2);
    }
    // A late start from a constant initial volume: the closed form starts from the noised
    // initial value, mean sqrt(ab) x_init and variance 1 - ab.
    let x_init = 0.8f64;
    let opts = SamplerOptions { steps: 10, eta: 0.0, rounds: 1, batch: 64, seed: 5, clip_x0: false, t_start: 300, graph: true };
    let init = vec![x_init as f32; 24 * 24 * 24];
    let (out, stats) = sample(&m, dims, &opts, Some(&init), |_, _| Ok(()), |_, _| {}).unwrap();
    assert_eq!(stats.passes, 10);
    let (mean, std) = mean_std(&out);
    let (em, es) = expected(&opts, mu, s, (1.0, 0.0), Some(x_init), None);
    eprintln!("late start: mean {mean:.4} vs {em:.4}, std {std:.4} vs {es:.4}");
    assert!((mean - em).abs() < 0.02 && (std / es - 1.0).abs() < 0.03, "late start: {mean} {std} vs {em} {es}");
    // Starting at t = 300 keeps part of the initial value (deterministic DDIM, eta 0).
    assert!(em > mu + 0.05, "closed form {em}");
}

/// Averaging the last passes' estimates (`TailMean`, reconstruction's `average_below`): the output
/// keeps the data's mean and its spread shrinks towards the posterior mean's as the closed form
/// says, with a data-consistency hook too; averaging only the last pass changes nothing.
#[test]
fn averaging_the_last_estimates_follows_the_closed_form() {
    let mut devices = vec![Device::Cpu];
    devices.extend(common::kernel_devices("sampler"));
    for dev in devices {
        tail_mean_on(dev);
    }
}

fn tail_mean_on(dev: Device) {
    let (mu, s) = (0.3f64, 0.5f64);
    let m = Analytic { dev: dev.clone(), gauss: Some((mu, s)), sched: Schedule::default(), pred: Prediction::Eps };
    let dims = [24, 24, 24];
    // The sampler with `TailMean` in its hook, as reconstruction runs it; dc = (lambda, y) as in
    // `expected`.
    let run = |opts: &SamplerOptions, below: usize, dc: (f64, f64)| {
        let mut tail = TailMean::new(below, opts.passes());
        let hook = |x0: &mut Tensor, t: usize| -> Result<()> {
            tail.observe(x0, t)?;
            tomodiff::ops::elementwise::affine_inplace(dc.0 as f32, ((1.0 - dc.0) * dc.1) as f32, x0)
        };
        let (out, _) = sample(&m, dims, opts, None, hook, |_, _| {}).unwrap();
        (out, tail.count())
    };
    for (rounds, below, dc) in [(1, 200, (1.0, 0.0)), (2, 150, (1.0, 0.0)), (2, 150, (0.6, -0.4))] {
        let opts = SamplerOptions { steps: 50, eta: 0.85, rounds, batch: 64, seed: 7, clip_x0: false, t_start: 999, graph: true };
        let (out, count) = run(&opts, below, dc);
        let want_count = timesteps(50, 999).iter().filter(|t| **t <= below).count() * rounds;
        assert_eq!(count, want_count, "estimates averaged");
        let (mean, std) = mean_std(&out);
        let (em, es) = expected(&opts, mu, s, dc, None, Some(below));
        let (_, es_last) = expected(&opts, mu, s, dc, None, None);
        eprintln!("{} rounds {rounds}, t <= {below} ({count} estimates): mean {mean:.4} vs {em:.4}, std {std:.4} vs {es:.4} (last pass alone {es_last:.4})", dev.name());
        assert!((mean - em).abs() < 0.02 && (std / es - 1.0).abs() < 0.03, "{mean} {std} vs {em} {es}");
        // Without a pull the closed form's spread is clearly smaller: the estimates near t = 0
        // hold independent noise. (With one, the estimates averaged are those before it.)
        if dc.0 == 1.0 {
            assert!(es < 0.9 * es_last, "averaging {count} estimates: std {es} vs {es_last}");
        }
    }
    // Only the last pass (t = 0) below the threshold: the plain output, bit for bit.
    let opts = SamplerOptions { steps: 10, eta: 0.85, rounds: 1, batch: 64, seed: 8, clip_x0: false, t_start: 999, graph: true };
    let (avg, count) = run(&opts, 0, (1.0, 0.0));
    let (plain, _) = sample(&m, dims, &opts, None, |_, _| Ok(()), |_, _| {}).unwrap();
    assert_eq!(count, 1);
    assert!(avg == plain, "one estimate averaged is the estimate");
}
