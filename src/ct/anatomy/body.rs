//! The trunk's shape: the inner boundary of the rib cage (the cavity) as a superellipse changing
//! with z, and the chest wall around it, layer by layer (ribs, muscle, subcutaneous fat, skin).
//! A point's place in the wall is measured along the ray from the cage's centre, so every layer
//! follows the cage and the skin is the cage grown by the layers' thicknesses.
use super::shape::{bump, smoothstep, Profile};
use rand::rngs::StdRng;
use rand::Rng;

/// Thickness of the band holding the ribs and intercostal muscle, mm.
pub(crate) const RIB_LAYER: f64 = 10.0;
/// Skin thickness, mm.
pub(crate) const SKIN: f64 = 1.5;
/// The vertebral bodies' centres lie this far in front of the cage's back wall, mm.
const SPINE_INSET: f64 = 14.0;

/// Per-seed scales: x (width), y (depth), z (height).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) z: f64,
}

pub(crate) struct Body {
    pub(crate) scale: Scale,
    wc: Profile,
    ba: Profile,
    bp: Profile,
    spine_y: Profile,
    /// Added to `spine_y` to centre the body front to back.
    shift: f64,
    n: f64,
    fat: f64,
    fat_h: [f64; 3],
    fat_z: Profile,
    pect: f64,
    pect_z: Profile,
    para: f64,
    shoulder_z: Profile,
    scap_z: Profile,
    /// y of the table's top, where the back is flattened, mm.
    pub(crate) table_top: f64,
}

/// The body's cross-section at one height: everything that depends on z alone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Level {
    pub(crate) z: f64,
    /// y of the cage's centre (x is 0).
    pub(crate) y0: f64,
    /// y of the vertebral bodies' centre line.
    pub(crate) yvb: f64,
    pub(crate) wc: f64,
    pub(crate) ba: f64,
    pub(crate) bp: f64,
    n: f64,
    fat: f64,
    fat_h: [f64; 3],
    pect: f64,
    para: f64,
    gutter: f64,
    shoulder: f64,
    scap: f64,
    /// The body's superellipse: half-width, front and back extents from the cage's centre.
    hull: [f64; 3],
}

/// A point's place relative to the wall: direction from the cage's centre, depth beyond the cage
/// boundary (`out`, negative inside the cavity), and the layers' thicknesses there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wall {
    pub(crate) uy: f64,
    pub(crate) out: f64,
    pub(crate) muscle: f64,
    pub(crate) fat: f64,
    /// Depth of the skin's outer surface beyond the cage boundary.
    pub(crate) outline: f64,
}

fn profile(k: &[(f64, f64)], sz: f64, sv: f64) -> Profile {
    Profile::new(k.iter().map(|&(z, v)| (z * sz, v * sv)).collect())
}

impl Body {
    pub(crate) fn new(rng: &mut StdRng) -> Body {
        let scale = Scale { x: rng.random_range(0.93..1.07), y: rng.random_range(0.92..1.08), z: rng.random_range(0.95..1.05) };
        let (sx, sy, sz) = (scale.x, scale.y, scale.z);
        // Nominal adult male cage (inner rib surface), mm: narrow at the first ribs, widest at the
        // 8th-9th ribs, rounder in the upper abdomen, the neck's visceral space above 200 mm.
        let wc = profile(&[(-420.0, 132.0), (-220.0, 136.0), (-120.0, 140.0), (-50.0, 138.0), (20.0, 129.0), (70.0, 116.0), (110.0, 100.0), (145.0, 82.0), (170.0, 64.0), (190.0, 48.0), (215.0, 38.0), (420.0, 36.0)], sz, sx);
        let ba = profile(&[(-420.0, 90.0), (-180.0, 88.0), (-80.0, 84.0), (0.0, 78.0), (60.0, 70.0), (110.0, 58.0), (150.0, 46.0), (180.0, 34.0), (215.0, 28.0), (420.0, 28.0)], sz, sy);
        let bp = profile(&[(-420.0, 66.0), (-150.0, 64.0), (0.0, 62.0), (100.0, 58.0), (150.0, 50.0), (185.0, 36.0), (215.0, 28.0), (420.0, 28.0)], sz, sy);
        // Kyphosis and lordosis: the spine lies nearest the table in the mid-thorax.
        let spine_y = profile(&[(-420.0, 30.0), (-200.0, 24.0), (-120.0, 12.0), (-40.0, 2.0), (40.0, 0.0), (120.0, 6.0), (180.0, 16.0), (230.0, 30.0), (420.0, 40.0)], sz, 1.0);
        let mut b = Body {
            scale,
            wc,
            ba,
            bp,
            spine_y,
            shift: 0.0,
            n: rng.random_range(2.05..2.45),
            fat: rng.random_range(5.0..22.0),
            fat_h: std::array::from_fn(|_| rng.random_range(-0.15..0.15)),
            fat_z: profile(&[(-420.0, 1.6), (-150.0, 1.4), (-50.0, 1.1), (50.0, 1.0), (160.0, 1.0), (210.0, 0.6), (420.0, 0.6)], sz, 1.0),
            pect: rng.random_range(10.0..24.0),
            pect_z: profile(&[(-60.0, 0.0), (0.0, 0.4), (60.0, 1.0), (130.0, 1.0), (175.0, 0.4), (200.0, 0.0)], sz, 1.0),
            para: rng.random_range(38.0..50.0),
            shoulder_z: profile(&[(80.0, 0.0), (130.0, 0.8), (165.0, 1.0), (195.0, 0.7), (225.0, 0.0)], sz, rng.random_range(35.0..50.0)),
            scap_z: profile(&[(0.0, 0.0), (40.0, 0.8), (100.0, 1.0), (160.0, 1.0), (195.0, 0.0)], sz, rng.random_range(16.0..26.0)),
            table_top: 0.0,
        };
        // Centre the body's front-to-back extent at y = 0 in the mid-thorax, then lay it on the
        // table: the table's top is 3 mm inside the most posterior skin (the back flattens on it).
        let mid = b.level(0.0);
        let front = mid.y0 + mid.ba + mid.wall(0.0, mid.y0 + 1.0).outline;
        let back = mid.y0 - mid.bp - mid.wall(0.0, mid.y0 - 1.0).outline;
        b.shift = -(front + back) / 2.0;
        let lowest = (-12..=16)
            .map(|i| {
                let l = b.level(i as f64 * 10.0 * sz);
                l.y0 - l.bp - l.wall(0.0, l.y0 - 1.0).outline
            })
            .fold(f64::INFINITY, f64::min);
        b.table_top = lowest + 3.0;
        b
    }

    pub(crate) fn level(&self, z: f64) -> Level {
        let (bp, yvb) = (self.bp.at(z), self.spine_y.at(z) + self.shift);
        let mut l = Level {
            z,
            y0: yvb - SPINE_INSET + bp,
            yvb,
            wc: self.wc.at(z),
            ba: self.ba.at(z),
            bp,
            n: self.n,
            fat: self.fat * self.fat_z.at(z),
            fat_h: self.fat_h,
            pect: self.pect * self.pect_z.at(z),
            para: self.para,
            // Deep as the muscle they replace, so the back stays flat across the spine.
            gutter: 0.48 * self.para,
            shoulder: self.shoulder_z.at(z),
            scap: self.scap_z.at(z),
            hull: [0.0; 3],
        };
        let layers = |ux: f64, uy: f64| l.wall_at(ux, uy, 0.0).outline;
        l.hull = [l.wc + layers(1.0, 0.0), l.ba + layers(0.0, 1.0), l.bp + layers(0.0, -1.0)];
        l
    }
}

impl Level {
    /// Muscle thickness in direction (ux, uy): pectorals in front, paraspinal muscles behind,
    /// shoulder girdle and the muscles around the scapulae in the upper chest.
    fn muscle(&self, ux: f64, uy: f64) -> f64 {
        let ax = ux.abs();
        let back = smoothstep(0.0, 0.6, -uy);
        4.0 + self.pect * bump(ax, 0.5, 0.28) * smoothstep(0.1, 0.6, uy)
            + self.para * (1.0 - 0.45 * smoothstep(0.0, 0.5, ax) - 0.55 * smoothstep(0.45, 0.8, ax)) * back
            + 8.0 * ax * ax
            + self.shoulder * ax.powi(4)
            + self.scap * bump(ax, 0.75, 0.25) * smoothstep(0.0, 0.5, -uy)
    }

    /// Subcutaneous fat: thicker on the flanks and back, thin over the sternum.
    fn fat(&self, ux: f64, uy: f64) -> f64 {
        let ax = ux.abs();
        let h = self.fat_h;
        let shape = (1.0 + 0.6 * ax * ax + 0.3 * (-uy).max(0.0)) * (1.0 - 0.5 * bump(ax, 0.0, 0.2) * uy.max(0.0));
        self.fat * shape * (1.0 + h[0] * ux + h[1] * uy + h[2] * (ux * ux - uy * uy))
    }

    /// The wall's layers in direction (ux, uy) from the cage's centre, whose boundary lies `rc`
    /// mm away: the skin is the farther of the layers' sum and the body's own superellipse (which
    /// fills the hollows the layers alone would leave behind the flanks).
    fn wall_at(&self, ux: f64, uy: f64, rc: f64) -> Wall {
        let (muscle, fat) = (self.muscle(ux, uy), self.fat(ux, uy));
        let layers = RIB_LAYER + muscle + fat + SKIN;
        let hull = if self.hull[0] > 0.0 { self.hull_radius(ux, uy) - rc } else { 0.0 };
        Wall { uy, out: 0.0, muscle: muscle + (hull - layers).max(0.0), fat, outline: layers.max(hull) }
    }

    /// Distance from the cage's centre to its boundary along the unit direction (ux, uy).
    fn cage_radius(&self, ux: f64, uy: f64) -> f64 {
        // Behind, the paravertebral gutters reach back beside the spine.
        // The ribs run flat across the back: a higher exponent behind.
        let (b, n) = if uy > 0.0 { (self.ba, self.n) } else { (self.bp + self.gutter * bump(ux.abs(), 0.5, 0.22), self.n + 0.9) };
        ((ux.abs() / self.wc).powf(n) + (uy.abs() / b).powf(n)).powf(-1.0 / n)
    }

    /// Distance from the cage's centre to the body's superellipse: half-width hull[0], front
    /// hull[1] (exponent 2.2) and back hull[2] (exponent 3.2: a flat back with round corners).
    fn hull_radius(&self, ux: f64, uy: f64) -> f64 {
        let (b, n) = if uy > 0.0 { (self.hull[1], 2.2) } else { (self.hull[2], 3.2) };
        ((ux.abs() / self.hull[0]).powf(n) + (uy.abs() / b).powf(n)).powf(-1.0 / n)
    }

    /// Where (x, y) lies relative to the wall.
    pub(crate) fn wall(&self, x: f64, y: f64) -> Wall {
        let dy = y - self.y0;
        let r = (x * x + dy * dy).sqrt();
        let (ux, uy) = if r < 1e-6 { (0.0, 1.0) } else { (x / r, dy / r) };
        let rc = self.cage_radius(ux, uy);
        Wall { out: r - rc, ..self.wall_at(ux, uy, rc) }
    }

    /// The point (x, y) `out` mm beyond the cage boundary at angle `phi` from the posterior
    /// midline, on side `s` (+1 right, -1 left).
    pub(crate) fn point(&self, s: f64, phi: f64, out: f64) -> [f64; 2] {
        let (ux, uy) = (s * phi.sin(), -phi.cos());
        let r = self.cage_radius(ux, uy) + out;
        [r * ux, self.y0 + r * uy]
    }

    /// Muscle thickness at angle `phi` from the posterior midline (the scapulae sit inside it).
    pub(crate) fn muscle_at(&self, phi: f64) -> f64 {
        self.muscle(phi.sin(), -phi.cos())
    }
}
