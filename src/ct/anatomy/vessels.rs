//! The mediastinum's tubes: trachea and main bronchi, aorta (ascending, arch with its branches,
//! descending), pulmonary trunk and arteries, venae cavae and brachiocephalic and jugular veins,
//! and the oesophagus; each in a thin fat sheath that keeps the lungs off it. They are drawn
//! through landmarks tied to the spine, the heart and the carina, so they move with them.
use super::body::Body;
use super::grid::{chain, Gate, Tube, AIRWAY, HARD};
use super::heart::Heart;
use super::shape::{add, mul, unit, V3};
use super::spine::{Region, Spine};
use super::tissue::Tissue;
use rand::rngs::StdRng;
use rand::Rng;

/// Where a lobar bronchus starts, its direction and radius, and its side (+1 right, -1 left).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lobe {
    pub(crate) start: V3,
    pub(crate) dir: V3,
    pub(crate) r: f64,
    pub(crate) side: f64,
}

pub(crate) struct Mediastinum {
    pub(crate) tubes: Vec<Tube>,
    pub(crate) lobes: Vec<Lobe>,
    /// The pulmonary arteries' ends at the right and left hila, with their radii.
    pub(crate) hila: [(V3, f64); 2],
}

pub(crate) fn airway(a: V3, b: V3, ra: f64, rb: f64, prio: u8, gate: Gate) -> Tube {
    Tube::new(a, b, ra, rb, Tissue::AirwayWall, Tissue::Airway, 0.5 + 0.17 * ra, prio, gate)
}

fn vessel(a: V3, b: V3, ra: f64, rb: f64) -> Tube {
    Tube::solid(a, b, ra, rb, Tissue::Blood, HARD, Gate::Always)
}

impl Mediastinum {
    pub(crate) fn new(body: &Body, spine: &Spine, heart: &Heart, cardia: V3, rng: &mut StdRng) -> Mediastinum {
        let front = |z: f64| spine.front(z, body.level(z).yvb);
        // The trachea lies in front of the oesophagus, which lies on the vertebral bodies.
        let yt = |z: f64| front(z) + 24.0;
        let zc = spine.get(Region::Thoracic, 5).top + 2.0;
        let za = spine.get(Region::Thoracic, 4).top;
        let zh = spine.get(Region::Thoracic, 12).bot;
        let carina = [2.0, yt(zc), zc];
                let mut tubes = Vec::new();
        let air = |a, b, ra, rb| airway(a, b, ra, rb, HARD, Gate::Always);
        let tr = rng.random_range(8.0..10.0);
        tubes.extend(chain(&[([0.0, yt(400.0), 400.0], tr), ([1.0, yt(150.0), 150.0], tr), (carina, tr)], air, Some(3.0)));
        let mut d = |v: V3, a: f64| unit(add(v, [a * (rng.random::<f64>() - 0.5), a * (rng.random::<f64>() - 0.5), a * (rng.random::<f64>() - 0.5)]));
        let er = add(carina, mul(d([0.45, -0.1, -0.89], 0.2), 24.0));
        let el = add(carina, mul(d([-0.72, -0.15, -0.68], 0.2), 48.0));
        let ebi = add(er, mul(d([0.2, -0.1, -0.97], 0.2), 24.0));
        tubes.extend(chain(&[(carina, 7.5), (er, 7.0)], air, Some(2.5)));
        tubes.extend(chain(&[(carina, 6.5), (el, 6.0)], air, Some(2.5)));
        tubes.push(airway(er, ebi, 5.5, 5.2, AIRWAY, Gate::Always));
        let lobes = vec![
            Lobe { start: er, dir: d([0.85, -0.1, 0.5], 0.3), r: 4.8, side: 1.0 },
            Lobe { start: ebi, dir: d([0.35, 0.85, -0.4], 0.3), r: 3.6, side: 1.0 },
            Lobe { start: ebi, dir: d([0.15, -0.45, -0.88], 0.3), r: 4.8, side: 1.0 },
            Lobe { start: el, dir: d([-0.45, 0.55, 0.7], 0.3), r: 5.0, side: -1.0 },
            Lobe { start: el, dir: d([-0.3, -0.45, -0.85], 0.3), r: 5.0, side: -1.0 },
        ];
        let ty = yt(zc);
        let v = |c: &[(V3, f64)]| chain(c, vessel, Some(3.5));
        // Aorta: up and to the right from the root, over the left main bronchus beside the
        // trachea, down the left front of the spine, through the hiatus in front of it.
        let root = heart.aortic_root;
        let zd = (za - 35.0 + zh) / 2.0;
        tubes.extend(v(&[
            (root, 15.0),
            (add(root, [6.0, 8.0, 30.0]), 16.0),
            ([12.0, ty + 22.0, za - 12.0], 15.0),
            ([-4.0, ty + 10.0, za], 14.0),
            ([-22.0, ty - 8.0, za - 6.0], 13.0),
            ([-20.0, front(za - 35.0) + 2.0, za - 35.0], 12.0),
            ([-18.0, front(zd) + 4.0, zd], 12.0),
            ([-6.0, front(zh) + 10.0, zh], 11.0),
            ([-3.0, front(-400.0) + 12.0, -400.0], 10.0),
        ]));
        // Arch branches and the neck's vessels.
        tubes.extend(v(&[([5.0, ty + 18.0, za + 5.0], 6.5), ([14.0, ty + 14.0, za + 40.0], 6.0), ([22.0, ty + 8.0, 400.0], 5.0)]));
        tubes.extend(v(&[([14.0, ty + 14.0, za + 40.0], 5.0), ([50.0, ty - 5.0, za + 55.0], 5.0), ([90.0, ty - 15.0, za + 50.0], 4.5)]));
        tubes.extend(v(&[([-6.0, ty + 10.0, za + 8.0], 4.5), ([-18.0, ty + 8.0, 400.0], 4.5)]));
        tubes.extend(v(&[([-18.0, ty - 4.0, za + 4.0], 5.0), ([-30.0, ty - 6.0, za + 40.0], 5.0), ([-60.0, ty - 12.0, za + 55.0], 5.0), ([-90.0, ty - 15.0, za + 50.0], 4.5)]));
        let s0 = [30.0, ty + 18.0, za + 25.0];
        for s in [1.0, -1.0] {
            tubes.extend(v(&[([s * 38.0, ty + 10.0, 400.0], 7.0), ([s * 35.0, ty + 14.0, za + 45.0], 7.0)]));
        }
        tubes.extend(v(&[([35.0, ty + 14.0, za + 45.0], 8.0), (s0, 9.0)]));
        tubes.extend(v(&[([-35.0, ty + 14.0, za + 45.0], 6.5), ([-5.0, ty + 30.0, za + 30.0], 6.5), (s0, 7.0)]));
        // Venae cavae into the right atrium.
        tubes.extend(v(&[(s0, 9.0), ([32.0, ty + 14.0, zc - 10.0], 10.0), (heart.svc_entry, 10.0)]));
        tubes.extend(v(&[([20.0, front(-400.0) + 30.0, -400.0], 12.0), ([22.0, front(zh) + 30.0, zh], 12.0), (heart.ivc_entry, 13.0)]));
        // Pulmonary trunk, bifurcating below the arch; the right artery passes behind the
        // ascending aorta and in front of the right main bronchus, the left over the left one.
        let p0 = heart.pulmonary_root;
        let bif = [-12.0, ty + 12.0, zc - 8.0];
        tubes.extend(v(&[(p0, 14.0), (add(p0, [-8.0, -8.0, 25.0]), 14.0), (bif, 13.0)]));
        let hr = ([40.0, ty + 8.0, zc - 25.0], 10.0);
        let hl = ([-55.0, ty - 15.0, zc - 18.0], 10.0);
        tubes.extend(v(&[(bif, 11.0), ([10.0, ty + 16.0, zc - 15.0], 11.0), hr]));
        tubes.extend(v(&[(bif, 11.0), ([-35.0, ty - 2.0, zc - 5.0], 11.0), hl]));
        // Oesophagus: on the spine behind the trachea, left of the midline, then forwards and left
        // through the hiatus to the stomach.
        let oes = |a, b, ra, rb| Tube::solid(a, b, ra, rb, Tissue::SoftTissue, HARD, Gate::Always);
        let zo = (zc + zh) / 2.0;
        tubes.extend(chain(
            &[([-4.0, front(400.0) + 7.0, 400.0], 7.0), ([-4.0, front(zc) + 7.0, zc], 7.0), ([-2.0, front(zo) + 12.0, zo], 7.5), ([-22.0, front(zh) + 30.0, zh + 15.0], 8.0), (cardia, 8.0)],
            oes,
            Some(2.5),
        ));
        Mediastinum { tubes, lobes, hila: [hr, hl] }
    }
}
