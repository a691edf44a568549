//! The three patch kernels of kernels/patches.cu and their CPU references: the global context (the
//! whole volume shrunk to the patch shape), the network's 5-channel inputs assembled from patch
//! starts, and patch outputs stitched back into the volume. Input channels, channels-last per
//! voxel: [noisy patch, global context, z, y, x] (docs/NETWORK.md). Patch starts may be negative
//! or run past the volume: voxels outside it read as zero and are not written back.
use super::resample::{self, Resize};
use super::{expect_dtype, same_device, stride_grid};
use crate::device::{Buffer, Device, Launch};
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

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
        self.dev.as_ref().ok_or_else(|| Error::DeviceMismatch("patch starts on the cpu device have no device buffer".into()))
    }
}

/// CPU reference of `context`: the whole volume (D, H, W) shrunk to the patch shape.
pub fn context_ref(vol: &[f32], dims: [usize; 3], patch: [usize; 3], mode: Resize) -> Vec<f32> {
    match mode {
        Resize::Trilinear => resample::trilinear_ref(vol, dims, patch),
        Resize::Area => resample::area_ref(vol, dims, patch),
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

/// CPU reference of `assemble`: the inputs (N patches, pz, py, px, 5 channels) for patches
/// starting at `starts`.
pub fn assemble_ref(vol: &[f32], dims: [usize; 3], patch: [usize; 3], starts: &[[isize; 3]], ctx: &[f32]) -> Vec<f32> {
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
    data
}

/// The global context D(x_t) on the volume's device: vol (D, H, W) f32 -> (pz, py, px) f32 (kernels/patches.cu on
/// emu and cuda, the references above on the CPU).
pub fn context(vol: &Tensor, patch: [usize; 3], mode: Resize) -> Result<Tensor> {
    let s = vol.shape();
    if s.len() != 3 || vol.dtype() != DType::F32 {
        return Err(Error::Shape(format!("context: a (D, H, W) f32 volume is needed, got {s:?} {}", vol.dtype())));
    }
    let dims = [s[0], s[1], s[2]];
    let dev = vol.device().clone();
    if !dev.runs_kernels() {
        return Tensor::from_f32(&context_ref(&vol.to_f32_vec()?, dims, patch, mode), &patch, DType::F32, &dev);
    }
    let y = Tensor::zeros(&patch, DType::F32, &dev)?;
    let kernel = match mode {
        Resize::Trilinear => "resize_trilinear_f32",
        Resize::Area => "resize_area_f32",
    };
    Launch::new(kernel)?
        .grid(stride_grid(y.numel(), 128))
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
pub fn assemble(vol: &Tensor, ctx: &Tensor, starts: &Starts, dtype: DType) -> Result<Tensor> {
    let s = vol.shape();
    let patch = [ctx.shape()[0], ctx.shape().get(1).copied().unwrap_or(0), ctx.shape().get(2).copied().unwrap_or(0)];
    if s.len() != 3 || ctx.shape().len() != 3 || vol.dtype() != DType::F32 || ctx.dtype() != DType::F32 {
        return Err(Error::Shape(format!("assemble: volume {s:?} and context {:?} must be 3D f32", ctx.shape())));
    }
    let dims = [s[0], s[1], s[2]];
    let dev = vol.device().clone();
    let shape = [starts.len(), patch[0], patch[1], patch[2], 5];
    if !dev.runs_kernels() {
        let p = assemble_ref(&vol.to_f32_vec()?, dims, patch, starts.host(), &ctx.to_f32_vec()?);
        return Tensor::from_f32(&p, &shape, dtype, &dev);
    }
    if dtype != DType::BF16 {
        return Err(Error::DType(format!("assemble on {}: patches are bf16, not {dtype}", dev.name())));
    }
    let out = Tensor::zeros(&shape, DType::BF16, &dev)?;
    Launch::new("assemble_patches_bf16")?
        .grid(stride_grid(out.numel() / 5, 128))
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

/// CPU reference of `stitch`: patches (N, pz, py, px) into vol (D, H, W) at `starts`.
pub fn stitch_ref(patches: &[f32], starts: &[[isize; 3]], patch: [usize; 3], vol: &mut [f32], dims: [usize; 3]) {
    let pv: usize = patch.iter().product();
    for (b, st) in starts.iter().enumerate() {
        for k in 0..patch[0] {
            let z = st[0] + k as isize;
            if z < 0 || z >= dims[0] as isize {
                continue;
            }
            for j in 0..patch[1] {
                let y = st[1] + j as isize;
                if y < 0 || y >= dims[1] as isize {
                    continue;
                }
                for i in 0..patch[2] {
                    let x = st[2] + i as isize;
                    if x >= 0 && (x as usize) < dims[2] {
                        vol[(z as usize * dims[1] + y as usize) * dims[2] + x as usize] = patches[b * pv + (k * patch[1] + j) * patch[2] + i];
                    }
                }
            }
        }
    }
}

/// Writes patch outputs (N, pz, py, px[, 1]) back into the volume (D, H, W) at `starts`; voxels
/// outside the volume are dropped. The patches must not overlap (one tiling's tiles do not).
pub fn stitch(patches: &Tensor, starts: &Starts, vol: &mut Tensor) -> Result<()> {
    let (ps, vs) = (patches.shape(), vol.shape());
    if ps.len() < 4 || ps[0] != starts.len() || ps.get(4).is_some_and(|c| *c != 1) || vs.len() != 3 {
        return Err(Error::Shape(format!("stitch: patches {ps:?} for {} starts into a volume {vs:?}", starts.len())));
    }
    same_device("stitch", &[patches, vol])?;
    expect_dtype("stitch", patches, DType::F32)?;
    expect_dtype("stitch", vol, DType::F32)?;
    let (patch, dims) = ([ps[1], ps[2], ps[3]], [vs[0], vs[1], vs[2]]);
    let dev = vol.device().clone();
    if !dev.runs_kernels() {
        stitch_ref(patches.host_f32().ok_or_else(|| Error::DType("stitch: host f32 patches expected".into()))?, starts.host(), patch, vol.host_f32_mut().ok_or_else(|| Error::DType("stitch: host f32 volume expected".into()))?, dims);
        return Ok(());
    }
    Launch::new("stitch_patches_f32")?
        .grid(stride_grid(patches.numel(), 256))
        .block([256, 1, 1])
        .buf(patches.buffer())
        .buf(starts.buffer()?)
        .buf(vol.buffer())
        .i32s(&[starts.len()])
        .i32s(&dims)
        .i32s(&patch)
        .run(&dev)
}
