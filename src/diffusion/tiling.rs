//! Tiling a volume into patches and building the network's 5-channel inputs (METHOD.md
//! sections 2 and 7). Per axis of length N and patch length P, with an offset o in [0, P): patches
//! start at o + j P - P (volume coordinates; the volume is zero-padded by P), j = 0 ..= ceil(N / P).
//! For N a multiple of P that is METHOD.md's N / P + 1 patches; for other N the extra patch keeps
//! the far edge covered for every offset.
//! Input channels, channels-last per voxel: [noisy patch, global context, z, y, x].
use crate::device::{Buffer, Device};
use crate::error::{Error, Result};
use crate::nn::ContextMode;
use crate::ops::resample;

/// Patch starts along one axis (may be negative: the padding).
pub fn starts(n: usize, p: usize, offset: usize) -> Vec<isize> {
    (0..=n.div_ceil(p)).map(|j| (offset + j * p) as isize - p as isize).collect()
}

/// The patch starts of one batch: on the host for the CPU references, and on kernel devices also
/// as i32 triples in a device buffer that the kernels read. `set` rewrites them in place between
/// passes, so that a captured graph sees the new starts.
pub struct Starts {
    host: Vec<[isize; 3]>,
    dev: Option<Buffer>,
}

impl Starts {
    pub fn new(starts: &[[isize; 3]], dev: &Device) -> Result<Starts> {
        let buf = if dev.runs_kernels() { Some(dev.alloc(starts.len() * 12)?) } else { None };
        let mut s = Starts { host: starts.to_vec(), dev: buf };
        s.set(starts)?;
        Ok(s)
    }

    /// New starts, as many as before.
    pub fn set(&mut self, starts: &[[isize; 3]]) -> Result<()> {
        if starts.len() != self.host.len() {
            return Err(Error::Shape(format!("{} patch starts given for a batch of {}", starts.len(), self.host.len())));
        }
        self.host.copy_from_slice(starts);
        if let Some(b) = self.dev.as_mut() {
            let flat: Vec<i32> = starts.iter().flat_map(|s| s.map(|v| v as i32)).collect();
            b.write(bytemuck::cast_slice(&flat))?;
        }
        Ok(())
    }

    pub fn host(&self) -> &[[isize; 3]] {
        &self.host
    }

    pub fn len(&self) -> usize {
        self.host.len()
    }

    pub fn is_empty(&self) -> bool {
        self.host.is_empty()
    }

    /// The device copy (kernel devices only).
    pub fn buffer(&self) -> Result<&Buffer> {
        self.dev.as_ref().ok_or_else(|| Error::Config("patch starts on the cpu device have no device buffer".into()))
    }
}

/// A batch of patch inputs, channels-last (N, D, H, W, C) in f32.
#[derive(Clone, Debug)]
pub struct Patches {
    pub n: usize,
    pub dims: [usize; 3],
    pub c: usize,
    pub data: Vec<f32>,
}

/// Every patch start (z, y, x) of one tiling, z slowest.
pub fn tiling(dims: [usize; 3], patch: [usize; 3], offset: [usize; 3]) -> Vec<[isize; 3]> {
    let (sz, sy, sx) = (starts(dims[0], patch[0], offset[0]), starts(dims[1], patch[1], offset[1]), starts(dims[2], patch[2], offset[2]));
    let mut out = Vec::with_capacity(sz.len() * sy.len() * sx.len());
    for &z in &sz {
        for &y in &sy {
            for &x in &sx {
                out.push([z, y, x]);
            }
        }
    }
    out
}

/// The whole volume shrunk to the patch shape: D(x_t).
pub fn context(vol: &[f32], dims: [usize; 3], patch: [usize; 3], mode: ContextMode) -> Vec<f32> {
    match mode {
        ContextMode::Trilinear => resample::trilinear_ref(vol, dims, patch),
        ContextMode::Area => resample::area_ref(vol, dims, patch),
    }
}

/// Positional value of index i on an axis of length n: -1 + 2 i / (n - 1) (0 when n = 1).
pub fn position(i: isize, n: usize) -> f32 {
    if n < 2 {
        0.0
    } else {
        (-1.0 + 2.0 * i as f64 / (n - 1) as f64) as f32
    }
}

/// The batch of inputs (N patches, patch shape, 5 channels) for patches starting at `starts`.
pub fn assemble(vol: &[f32], dims: [usize; 3], patch: [usize; 3], starts: &[[isize; 3]], ctx: &[f32]) -> Patches {
    let [pz, py, px] = patch;
    let s = pz * py * px;
    let mut data = vec![0f32; starts.len() * s * 5];
    for (b, st) in starts.iter().enumerate() {
        for k in 0..pz {
            let z = st[0] + k as isize;
            for j in 0..py {
                let y = st[1] + j as isize;
                for i in 0..px {
                    let x = st[2] + i as isize;
                    let inside = z >= 0 && y >= 0 && x >= 0 && (z as usize) < dims[0] && (y as usize) < dims[1] && (x as usize) < dims[2];
                    let p = (k * py + j) * px + i;
                    let o = (b * s + p) * 5;
                    data[o] = if inside { vol[(z as usize * dims[1] + y as usize) * dims[2] + x as usize] } else { 0.0 };
                    data[o + 1] = ctx[p];
                    data[o + 2] = position(z, dims[0]);
                    data[o + 3] = position(y, dims[1]);
                    data[o + 4] = position(x, dims[2]);
                }
            }
        }
    }
    Patches { n: starts.len(), dims: patch, c: 5, data }
}

/// D(x_t) on the volume's device: vol (D, H, W) f32 -> (pz, py, px) f32 (kernels/patches.cu on
/// emu and cuda, the references above on the CPU).
pub fn context_tensor(vol: &crate::Tensor, patch: [usize; 3], mode: ContextMode) -> crate::Result<crate::Tensor> {
    use crate::device::Launch;
    use crate::{DType, Tensor};
    let s = vol.shape();
    if s.len() != 3 || vol.dtype() != DType::F32 {
        return Err(Error::Shape(format!("context: a (D, H, W) f32 volume is needed, got {s:?} {}", vol.dtype())));
    }
    let dims = [s[0], s[1], s[2]];
    let dev = vol.device().clone();
    if !dev.runs_kernels() {
        return Tensor::from_f32(&context(&vol.to_f32_vec()?, dims, patch, mode), &patch, DType::F32, &dev);
    }
    let y = Tensor::zeros(&patch, DType::F32, &dev)?;
    let kernel = match mode {
        ContextMode::Trilinear => "resize_trilinear_f32",
        ContextMode::Area => "resize_area_f32",
    };
    Launch::new(kernel)?
        .grid(crate::ops::stride_grid(y.numel(), 128))
        .block([128, 1, 1])
        .buf(vol.buffer())
        .buf(y.buffer())
        .i32s(&dims)
        .i32s(&patch)
        .run(&dev)?;
    Ok(y)
}

/// The batch of inputs (N, pz, py, px, 5) on the volume's device, in `dtype` (f32 on the CPU,
/// bf16 on emu and cuda), for patches starting at `starts`.
pub fn assemble_tensor(vol: &crate::Tensor, ctx: &crate::Tensor, starts: &Starts, dtype: crate::DType) -> crate::Result<crate::Tensor> {
    use crate::device::Launch;
    use crate::{DType, Tensor};
    let s = vol.shape();
    let patch = [ctx.shape()[0], ctx.shape().get(1).copied().unwrap_or(0), ctx.shape().get(2).copied().unwrap_or(0)];
    if s.len() != 3 || ctx.shape().len() != 3 || vol.dtype() != DType::F32 || ctx.dtype() != DType::F32 {
        return Err(Error::Shape(format!("assemble: volume {s:?} and context {:?} must be 3D f32", ctx.shape())));
    }
    let dims = [s[0], s[1], s[2]];
    let dev = vol.device().clone();
    let shape = [starts.len(), patch[0], patch[1], patch[2], 5];
    if !dev.runs_kernels() {
        let p = assemble(&vol.to_f32_vec()?, dims, patch, starts.host(), &ctx.to_f32_vec()?);
        return Tensor::from_f32(&p.data, &shape, dtype, &dev);
    }
    if dtype != DType::BF16 {
        return Err(Error::DType(format!("assemble on {}: patches are bf16, not {dtype}", dev.name())));
    }
    let out = Tensor::zeros(&shape, DType::BF16, &dev)?;
    Launch::new("assemble_patches_bf16")?
        .grid(crate::ops::stride_grid(out.numel() / 5, 128))
        .block([128, 1, 1])
        .buf(vol.buffer())
        .buf(ctx.buffer())
        .buf(starts.buffer()?)
        .buf(out.buffer())
        .i32s(&[starts.len()])
        .i32s(&dims)
        .i32s(&patch)
        .run(&dev)?;
    Ok(out)
}
