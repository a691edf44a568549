//! The vertebral column: bodies (cortical shell, trabecular core, waisted sides), discs between
//! them, the spinal canal with CSF and cord, and the posterior elements (pedicles, laminae,
//! spinous and transverse processes) as tubes. The thoracic transverse processes are made with
//! the ribs they meet (skeleton.rs).
use super::body::Body;
use super::grid::{Gate, Tube, BONE};
use super::shape::Profile;
use super::tissue::Tissue;
use rand::rngs::StdRng;
use rand::Rng;

/// Cortical shell of the vertebral bodies and processes, mm.
const CORTEX: f64 = 1.2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Region {
    Cervical,
    Thoracic,
    Lumbar,
}

/// One vertebra: its body's z range and half sizes (mm), the canal behind it, its region and
/// number within the region (1-based).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vertebra {
    pub(crate) top: f64,
    pub(crate) bot: f64,
    pub(crate) wx: f64,
    pub(crate) wya: f64,
    pub(crate) wyp: f64,
    pub(crate) rx: f64,
    pub(crate) ry: f64,
    pub(crate) region: Region,
    pub(crate) num: usize,
}

impl Vertebra {
    pub(crate) fn mid(&self) -> f64 {
        (self.top + self.bot) / 2.0
    }
    fn height(&self) -> f64 {
        self.top - self.bot
    }
}

pub(crate) struct Spine {
    /// Top to bottom.
    verts: Vec<Vertebra>,
    rx: Profile,
    ry: Profile,
    wyp: Profile,
    wya: Profile,
    cord_end: f64,
}

/// Nominal half sizes (wx, wya, wyp, rx, ry), height and the disc below, mm.
fn nominal(region: Region, num: usize) -> ([f64; 5], f64, f64) {
    match region {
        Region::Cervical => ([8.0 + 0.6 * num as f64, 7.5, 7.0, 11.0, 7.0], 13.0, 4.5),
        Region::Thoracic => {
            let u = (num - 1) as f64 / 11.0;
            let wya = 8.5 + 6.5 * u;
            ([13.0 + 8.0 * u, wya, 0.85 * wya, if num == 1 { 10.0 } else { 8.5 }, 7.5], 15.0 + 8.0 * u, 3.5 + 2.5 * u)
        }
        Region::Lumbar => ([22.0 + num as f64, 16.0, 14.0, 11.0, 8.0], 25.0 + num as f64, 9.0),
    }
}

impl Spine {
    pub(crate) fn new(body: &Body, rng: &mut StdRng) -> Spine {
        let sz = body.scale.z;
        let size = rng.random_range(0.92..1.08);
        let t1_top = 158.0 * sz + rng.random_range(-6.0..6.0);
        let make = |region, num, top: f64, rng: &mut StdRng| {
            let (w, h, _) = nominal(region, num);
            let h = h * sz * rng.random_range(0.97..1.03);
            let w = w.map(|v| v * size);
            Vertebra { top, bot: top - h, wx: w[0], wya: w[1], wyp: w[2], rx: w[3], ry: w[4], region, num }
        };
        let mut down = Vec::new();
        let mut top = t1_top;
        let order = (1..=12).map(|n| (Region::Thoracic, n)).chain((1..=5).map(|n| (Region::Lumbar, n)));
        for (region, num) in order {
            let v = make(region, num, top, rng);
            top = v.bot - nominal(region, num).2 * sz;
            down.push(v);
        }
        let mut up = Vec::new();
        let mut bot = t1_top + nominal(Region::Cervical, 7).2 * sz;
        for num in (1..=7).rev() {
            let h = nominal(Region::Cervical, num).1 * sz;
            up.push(make(Region::Cervical, num, bot + h, rng));
            bot += h + nominal(Region::Cervical, num).2 * sz;
        }
        up.reverse();
        let verts: Vec<Vertebra> = up.into_iter().chain(down).collect();
        let knots = |f: fn(&Vertebra) -> f64| Profile::new(verts.iter().map(|v| (v.mid(), f(v))).collect());
        let l1 = verts.iter().find(|v| v.region == Region::Lumbar && v.num == 1).expect("L1");
        Spine { rx: knots(|v| v.rx), ry: knots(|v| v.ry), wyp: knots(|v| v.wyp), wya: knots(|v| v.wya), cord_end: l1.bot, verts }
    }

    /// The vertebra of a region and number.
    pub(crate) fn get(&self, region: Region, num: usize) -> &Vertebra {
        self.verts.iter().find(|v| v.region == region && v.num == num).expect("vertebra")
    }

    /// y of the vertebral bodies' front at height z, given their centre line yvb there.
    pub(crate) fn front(&self, z: f64, yvb: f64) -> f64 {
        yvb + self.wya.at(z)
    }

    /// y of the canal's centre at height z, given the bodies' centre line yvb there.
    pub(crate) fn canal_y(&self, z: f64, yvb: f64) -> f64 {
        yvb - self.wyp.at(z) - self.ry.at(z) - 2.0
    }

    /// Bone, disc, CSF or cord at (x, y, z), with yvb the bodies' centre line at z; None elsewhere.
    pub(crate) fn at(&self, x: f64, y: f64, z: f64, yvb: f64) -> Option<Tissue> {
        if x.abs() > 30.0 || y > yvb + 20.0 || y < yvb - 40.0 {
            return None;
        }
        let (rx, ry) = (self.rx.at(z), self.ry.at(z));
        let dyc = y - self.canal_y(z, yvb);
        if (x / rx).powi(2) + (dyc / ry).powi(2) <= 1.0 {
            let cord = z > self.cord_end && (x / (0.5 * rx)).powi(2) + ((dyc - 0.15 * ry) / (0.55 * ry)).powi(2) <= 1.0;
            return Some(if cord { Tissue::SpinalCord } else { Tissue::Csf });
        }
        let i = self.verts.partition_point(|v| v.bot > z);
        let v = self.verts.get(i)?;
        let dy = y - yvb;
        if z <= v.top {
            // Waisted sides: the body is 8% narrower half-way between its endplates.
            let t = 2.0 * (z - v.mid()) / v.height();
            let waist = 1.0 - 0.08 * (1.0 - t * t);
            let wy = if dy > 0.0 { v.wya } else { v.wyp };
            let (wx, wy) = (v.wx * waist, wy * waist);
            if (x / wx).powi(2) + (dy / wy).powi(2) > 1.0 {
                return None;
            }
            let core = (x / (wx - CORTEX)).powi(2) + (dy / (wy - CORTEX)).powi(2) <= 1.0 && z < v.top - CORTEX && z > v.bot + CORTEX;
            return Some(if core { Tissue::TrabecularBone } else { Tissue::CorticalBone });
        }
        // Between this body and the one above: the disc, as wide as the two endplates' mean.
        let above = self.verts.get(i.checked_sub(1)?)?;
        let wx = (v.wx + above.wx) / 2.0;
        let wy = (if dy > 0.0 { v.wya + above.wya } else { v.wyp + above.wyp }) / 2.0;
        ((x / wx).powi(2) + (dy / wy).powi(2) <= 1.0).then_some(Tissue::Disc)
    }

    /// Pedicles, laminae and spinous processes of every vertebra, and the transverse processes of
    /// the cervical and lumbar ones.
    pub(crate) fn tubes(&self, body: &Body) -> Vec<Tube> {
        let bone = |a, b, ra, rb| Tube::new(a, b, ra, rb, Tissue::CorticalBone, Tissue::TrabecularBone, CORTEX, BONE, Gate::Always);
        let mut out = Vec::new();
        for v in &self.verts {
            let (zm, h) = (v.mid(), v.height());
            let yvb = body.level(zm).yvb;
            let yc = self.canal_y(zm, yvb);
            let (rx, ry) = (v.rx, v.ry);
            let back = yc - ry - 3.5;
            for s in [-1.0, 1.0] {
                let root = [s * (rx + 2.5), yc - 0.1 * ry, zm];
                let r_ped = (0.18 * h + 1.0).min(6.0);
                out.push(bone([s * 0.6 * v.wx, yvb - v.wyp + 3.0, zm + 0.1 * h], [root[0], root[1], zm + 0.1 * h], r_ped, r_ped));
                for dz in [-0.2 * h, 0.2 * h] {
                    out.push(bone([root[0], root[1], zm + dz], [0.0, back, zm + dz], 3.2, 3.2));
                }
                match v.region {
                    Region::Cervical => out.push(bone([s * (rx + 2.0), yvb - 2.0, zm], [s * (rx + 13.0), yvb - 3.0, zm], 3.0, 2.5)),
                    Region::Lumbar => out.push(bone([s * (rx + 3.0), yc + 6.0, zm], [s * (rx + 32.0), yc + 8.0, zm], 3.5, 2.5)),
                    Region::Thoracic => {}
                }
            }
            // Spinous processes: short in the neck (C7 long), long and steeply sloping in the
            // mid-thorax, broad and horizontal in the lumbar spine.
            let (len, drop, r) = match v.region {
                Region::Cervical => (if v.num == 7 { 30.0 } else { 15.0 }, 5.0, 3.5),
                Region::Thoracic => (28.0 + 4.0 * (1.0 - ((v.num as f64 - 6.5) / 5.5).powi(2)), 12.0 + 14.0 * (1.0 - ((v.num as f64 - 7.0) / 6.0).powi(2)), 4.0),
                Region::Lumbar => (28.0, 4.0, 5.5),
            };
            let dzs: &[f64] = if v.region == Region::Lumbar { &[-0.2, 0.2] } else { &[0.0] };
            for dz in dzs {
                let z0 = zm + dz * h;
                out.push(bone([0.0, back, z0], [0.0, back - len, z0 - drop], r, r - 0.5));
            }
        }
        out
    }
}
