//! What the CPU's fast paths share: run-time detection of AVX2 + FMA, a way to compile a loop
//! for them while the binary still runs on any x86-64, and an exp that vectorises.
//! The plain references of each op stay the truth the fast paths are tested against.

/// Whether this CPU has AVX2 and FMA (detected once).
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f` compiled for AVX2 + FMA where the CPU has them: `f` is inlined into a function with
/// those features enabled, so its loops vectorise 8 wide; elsewhere it runs as built.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the features were detected on this CPU.
        return unsafe { with_avx2(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// e^x in f32 without branches, so loops over it vectorise: x = n ln2 + r with |r| <= ln2/2,
/// e^r by its degree-6 Taylor polynomial, 2^n through the exponent bits. Relative error below
/// 3e-7 for x in [-87, 88]; smaller x gives 0 (as a denormal-free e^x would), larger saturates.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.0 / 720.0;
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

/// SiLU, v sigmoid(v), with the vectorising exp.
#[inline(always)]
pub fn silu(v: f32) -> f32 {
    v / (1.0 + exp(-v))
}

/// d silu(z) / dz with the vectorising exp.
#[inline(always)]
pub fn silu_grad(z: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-z));
    s * (1.0 + z * (1.0 - s))
}
