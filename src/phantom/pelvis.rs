//! Draws one patient's pelvis (bones, joints, muscles, pelvic contents, body outline) and turns
//! it into the ordered layers the renderer paints: body fat, pelvic contents, vessels, muscles,
//! joint space and ligaments, bones (cortex then marrow), then what lies inside bone (the caller
//! inserts confounders and lesions there), then the canal and foramina contents.

use super::anatomy::{
    sample_joint, Foramen, Ilium, IliumShape, Joint, JointCommon, JointSpace, L5Body, Ligament, Sacrum, SacrumShape,
    Side,
};
use super::noise::{Lattice, Texture};
use super::patient::{Patient, Sex};
use super::rng::Rng;
use super::scene::{Flat, Layer, Mottled, Shade, Textured};
use super::sdf::{ellipse2, smax, Aabb, Capsule, EllipseZ, Field, Lin, Stroke, V3};
use super::tissue::{Contrast, Marrow};
use std::sync::Arc;

/// Levels at which soft-tissue profiles are pinned (they vary quadratically between).
const ZS: [f32; 3] = [-55.0, 0.0, 55.0];

pub struct Pelvis {
    pub joints: Arc<[Joint; 2]>,
    pub sacrum: Arc<Sacrum>,
    pub ilia: [Arc<Ilium>; 2],
    pub l5: L5Body,
    pub body: Arc<BodyOutline>,
    pub fascia: Arc<Fascia>,
    pub cavity: Arc<Cavity>,
    /// The cavity as a shape.
    pub cavity_field: Arc<Compartment>,
    pub muscles: Vec<(&'static str, Arc<dyn Field>)>,
    pub septa: Vec<Arc<dyn Field>>,
    /// The paraspinal muscles' midline fat septum.
    pub midline: EllipseZ,
    pub bowel: Vec<Bowel>,
    pub vessels: Vec<(Capsule, bool)>,
    pub nerves: Vec<Capsule>,
    pub disc_remnant: Option<(f32, f32, f32)>,
    pub bulk: f32,
    pub fat_infiltration: f32,
}

/// A bowel loop: wall thickness and content.
pub struct Bowel {
    pub tube: Capsule,
    pub wall: f32,
    pub content: BowelContent,
}

#[derive(Clone, Copy, Debug)]
pub enum BowelContent {
    Gas,
    Fluid,
    Faeces,
    /// Small-bowel content: intermediate, fairly uniform.
    Chyme,
}

pub fn sample_pelvis(rng: &mut Rng, patient: &Patient) -> Pelvis {
    let male = patient.sex == Sex::Male;
    let size = if male { rng.uniform_f32(0.97, 1.1) } else { rng.uniform_f32(0.9, 1.03) };

    // Sacrum.
    let a0 = -rng.uniform_f32(24.0, 32.0) * size;
    let ala_ant = rng.uniform_f32(5.0, 12.0);
    let w0 = rng.uniform_f32(46.0, 55.0) * size;
    let z_hi = rng.uniform_f32(24.0, 36.0);
    let z_lo = -rng.uniform_f32(26.0, 38.0);
    let ya0 = a0 + ala_ant * (w0 / 50.0).powi(2) + 1.5;
    let common = JointCommon {
        w0,
        w1: rng.uniform_f32(3.0, 8.0),
        w2: rng.uniform_f32(-4.0, 0.0),
        beta_deg: rng.uniform_f32(14.0, 30.0),
        tanb_slope: rng.uniform_f32(0.05, 0.25),
        kappa: rng.uniform_f32(-0.08, 0.12),
        h: rng.uniform_f32(0.8, 1.5),
        z_lo,
        z_hi,
        ya0,
        ya_slope: rng.uniform_f32(-0.1, 0.1),
        len0: 30.0,
    };
    let mut joints = [sample_joint(rng, Side::Left, &common), sample_joint(rng, Side::Right, &common)];
    let z_top = z_hi + rng.uniform_f32(6.0, 16.0);
    let mut s = SacrumShape {
        a0,
        a2: rng.uniform_f32(2.0, 8.0),
        t0: rng.uniform_f32(44.0, 56.0) * size,
        t1: rng.uniform_f32(4.0, 12.0),
        ala_ant,
        bulge: rng.uniform_f32(3.0, 9.0),
        ala_post: rng.uniform_f32(4.0, 12.0),
        crest: rng.uniform_f32(2.0, 6.0),
        z_top,
        top_drop: rng.uniform_f32(4.0, 12.0),
        z_bottom: -140.0,
        canal_w: Lin::through(z_top, rng.uniform_f32(11.0, 15.0), -60.0, rng.uniform_f32(5.0, 7.0)),
        canal_h: Lin::through(z_top, rng.uniform_f32(5.5, 8.0), -60.0, rng.uniform_f32(2.5, 4.0)),
        lamina: rng.uniform_f32(5.0, 8.0),
        z_sac_end: z_top - rng.uniform_f32(22.0, 40.0),
        foramina: Vec::new(),
        disc_h: rng.uniform_f32(7.0, 12.0),
        l5: [rng.uniform_f32(22.0, 27.0) * size, rng.uniform_f32(15.0, 19.0) * size],
        cortex: rng.uniform_f32(0.9, 1.6),
    };
    // The synovial part covers the front of the ala's lateral face (more of it lower down); the
    // rest, behind, is the ligamentous part.
    let frac = [rng.uniform_f32(0.7, 0.88), rng.uniform_f32(0.6, 0.8), rng.uniform_f32(0.45, 0.65)];
    for jn in joints.iter_mut() {
        let lens = [0, 1, 2].map(|l| {
            let z = ZS[l];
            let w = jn.j(jn.ya.at(z), z).0;
            (frac[l] + rng.jitter(0.05)) * (s.y_post(w, z) - jn.ya.at(z)).max(12.0)
        });
        jn.len = Lin::through3(ZS, lens);
    }
    let joints = Arc::new(joints);
    let first = z_top - rng.uniform_f32(12.0, 16.0);
    let step = rng.uniform_f32(21.0, 26.0);
    let mut foramina = Vec::new();
    for side in [Side::Left, Side::Right] {
        let sg = side.sigma();
        let jn = &joints[if side == Side::Left { 0 } else { 1 }];
        for n in 0..4 {
            let zf = first - n as f32 * step + rng.jitter(1.5);
            let r = 4.8 - 0.7 * n as f32 + rng.jitter(0.5);
            s.foramina.push((side, zf, r));
            let (yc, w, h) = s.canal_centre(zf);
            let xb = 0.42 * jn.j(yc, zf).0 + 3.0;
            let xp = w + 12.0;
            let mut f = Foramen {
                side,
                bbox: Aabb::new([0.0; 3], [0.0; 3]),
                a: [sg * w * 0.9, yc + 0.3 * h, zf + 2.0],
                b: [sg * xb, s.y_ant(xb, zf) - 3.0, zf - 2.0],
                r,
                pa: [sg * w * 0.9, yc, zf + 1.0],
                pb: [sg * xp, s.y_post(xp, zf) + 4.0, zf + 3.0],
                pr: 0.55 * r,
            };
            f.bbox = f.bounds();
            foramina.push(f);
        }
    }
    let sacrum = Arc::new(Sacrum { s: s.clone(), joints: (*joints).clone(), foramina });

    // Ilia.
    let mut ilia = Vec::new();
    for n in 0..2 {
        let deg = |v: f32| v.to_radians();
        let shape = IliumShape {
            t: Lin::through3(
                ZS,
                [rng.uniform_f32(22.0, 32.0), rng.uniform_f32(18.0, 28.0), rng.uniform_f32(14.0, 22.0)],
            ),
            wing_angle: Lin::through3(
                ZS,
                [deg(rng.uniform_f32(55.0, 80.0)), deg(rng.uniform_f32(35.0, 55.0)), deg(rng.uniform_f32(25.0, 45.0))],
            ),
            wing_len: Lin::through3(
                ZS,
                [
                    rng.uniform_f32(35.0, 55.0) * size,
                    rng.uniform_f32(50.0, 80.0) * size,
                    rng.uniform_f32(65.0, 100.0) * size,
                ],
            ),
            wing_bow: rng.uniform_f32(6.0, 14.0),
            wing_r: [rng.uniform_f32(9.0, 13.0), rng.uniform_f32(3.0, 5.5), rng.uniform_f32(5.0, 8.0)],
            psis_dy: rng.uniform_f32(8.0, 20.0),
            psis_r: rng.uniform_f32(9.0, 13.0),
            pillar_z: [joints[n].z_lo - 10.0, joints[n].z_hi + 25.0],
            z_range: [-150.0, 150.0],
        };
        ilia.push(Arc::new(Ilium::new(joints[n].clone(), shape, s.clone())));
    }
    let ilia = [ilia[0].clone(), ilia[1].clone()];

    let l5 = L5Body { cy: s.y_ant_mid(z_top) + s.l5[1] + 1.0, r: s.l5, z0: z_top + s.disc_h, z1: 200.0 };

    // Soft tissue. Inside the skin lies subcutaneous fat down to the deep fascia; inside the
    // fascia everything is muscle (gluteal, paraspinal, abdominal wall) except the pelvic
    // cavity in front of the sacrum (fat, bowel, vessels), with psoas, iliacus and
    // piriformis drawn into the cavity and thin fat planes between the muscles.
    let bulk = if male { rng.uniform_f32(1.0, 1.25) } else { rng.uniform_f32(0.8, 1.05) };
    let fat_infiltration =
        rng.uniform_f32(0.02, 0.08) + if male { 0.0 } else { 0.03 } + patient.age_years as f32 * 0.001;
    let mut muscles: Vec<(&'static str, Arc<dyn Field>)> = Vec::new();
    let mut septa: Vec<Arc<dyn Field>> = Vec::new();
    let mut lateral = [[0.0f32; 3]; 2];
    let mut posterior = [[0.0f32; 3]; 2];
    let mut cav_tip = [[(0.0f32, 0.0f32); 3]; 2];
    for il in ilia.iter() {
        let n = if il.joint.side == Side::Left { 0 } else { 1 };
        let sg = il.joint.side.sigma();
        let jn = &il.joint;
        let lvl = ZS.map(|z| il.wing_points(z));
        let psis = ZS.map(|z| il.psis(z));
        let normal = |pts: &[(f32, f32, f32); 5], k: usize| -> (f32, f32) {
            let a = pts[k.saturating_sub(1)];
            let b = pts[(k + 1).min(4)];
            let (tx, ty) = (b.0 - a.0, b.1 - a.1);
            let l = (tx * tx + ty * ty).sqrt().max(1e-3);
            let (nx, ny) = (-ty / l, tx / l);
            if ny >= 0.0 {
                (nx, ny)
            } else {
                (-nx, -ny)
            }
        };
        // Gluteal muscles: medius along the wing's outer face, maximus behind it.
        let gmed =
            [rng.uniform_f32(12.0, 20.0), rng.uniform_f32(15.0, 24.0), rng.uniform_f32(16.0, 26.0)].map(|v| v * bulk);
        let gmax =
            [rng.uniform_f32(32.0, 48.0), rng.uniform_f32(26.0, 40.0), rng.uniform_f32(15.0, 26.0)].map(|v| v * bulk);
        let mut sep_pts = Vec::new();
        for k in 1..5 {
            let mut xs = [0.0; 3];
            let mut ys = [0.0; 3];
            for l in 0..3 {
                let (nx, ny) = normal(&lvl[l], k);
                let off = lvl[l][k].2 + gmed[l] * (0.7 + 0.1 * k as f32);
                xs[l] = lvl[l][k].0 + nx * off;
                ys[l] = lvl[l][k].1 + ny * off;
                lateral[n][l] = lateral[n][l].max(xs[l] + gmax[l] * 0.8);
                posterior[n][l] = posterior[n][l].max(ys[l] + gmax[l]);
            }
            sep_pts.push((
                Lin::through3(ZS, xs.map(|v| v * sg)),
                Lin::through3(ZS, ys),
                Lin::c(rng.uniform_f32(0.6, 1.6)),
            ));
        }
        // The plane between gluteus medius and maximus, a little beyond the wing's tip.
        let (a, b) = (sep_pts[2], sep_pts[3]);
        let ext = rng.uniform_f32(0.2, 0.6);
        let along =
            |p: Lin, q: Lin| Lin { a: q.a + (q.a - p.a) * ext, b: q.b + (q.b - p.b) * ext, c: q.c + (q.c - p.c) * ext };
        sep_pts.push((along(a.0, b.0), along(a.1, b.1), Lin::c(0.5)));
        septa.push(Arc::new(Stroke::new(sep_pts, -200.0, 200.0)));
        // Between paraspinal muscles and gluteus maximus, from the PSIS backwards.
        let px: Vec<f32> = (0..3).map(|l| psis[l].0 - 2.0).collect();
        let py: Vec<f32> = (0..3).map(|l| psis[l].1 + psis[l].2).collect();
        let back = rng.uniform_f32(35.0, 60.0);
        septa.push(Arc::new(Stroke::new(
            vec![
                (
                    Lin::through3(ZS, [px[0], px[1], px[2]].map(|v| v * sg)),
                    Lin::through3(ZS, [py[0], py[1], py[2]]),
                    Lin::c(1.0),
                ),
                (
                    Lin::through3(ZS, [px[0] + 8.0, px[1] + 10.0, px[2] + 12.0].map(|v| v * sg)),
                    Lin::through3(ZS, [py[0] + back, py[1] + back, py[2] + back]),
                    Lin::c(rng.uniform_f32(0.6, 1.5)),
                ),
            ],
            -200.0,
            200.0,
        )));
        // Iliacus inside the wing.
        let il_r: Vec<[f32; 3]> = (1..4)
            .map(|k| {
                let v = rng.uniform_f32([9.0, 11.0, 8.0][k - 1], [13.0, 17.0, 13.0][k - 1]) * bulk;
                [v * 1.3, v, v * 0.9]
            })
            .collect();
        let mut pts = Vec::new();
        for k in 1..4 {
            let mut xs = [0.0; 3];
            let mut ys = [0.0; 3];
            for l in 0..3 {
                let (nx, ny) = normal(&lvl[l], k);
                let off = lvl[l][k].2 + il_r[k - 1][l] * 0.85;
                xs[l] = lvl[l][k].0 - nx * off;
                ys[l] = lvl[l][k].1 - ny * off;
            }
            pts.push((Lin::through3(ZS, xs.map(|v| v * sg)), Lin::through3(ZS, ys), Lin::through3(ZS, il_r[k - 1])));
        }
        muscles.push(("iliacus", Arc::new(Stroke::new(pts, -200.0, 200.0))));
        // The cavity reaches out to the inner face of the wing.
        for l in 0..3 {
            let (nx, ny) = normal(&lvl[l], 3);
            let off = lvl[l][3].2 + 6.0;
            cav_tip[n][l] = (lvl[l][3].0 - nx * off, lvl[l][3].1 - ny * off);
        }
        // Psoas in front of the ala, drifting laterally to join iliacus lower down.
        let w_at = |z: f32| jn.j(jn.ya.at(z), z).0;
        let rx = rng.uniform_f32(14.0, 20.0) * bulk;
        let ry = rng.uniform_f32(12.0, 17.0) * bulk;
        let gap = rng.uniform_f32(1.0, 6.0);
        let xs = [w_at(ZS[0]) + 4.0, 0.7 * w_at(ZS[1]) + 8.0, 0.55 * w_at(ZS[2]) + 10.0];
        let ys: Vec<f32> = (0..3).map(|l| s.y_ant(xs[l], ZS[l]) - ry - gap).collect();
        muscles.push((
            "psoas",
            Arc::new(EllipseZ {
                cx: Lin::through3(ZS, xs.map(|v| v * sg)),
                cy: Lin::through3(ZS, [ys[0], ys[1], ys[2]]),
                rx: Lin::c(rx),
                ry: Lin::c(ry),
                angle: sg * rng.uniform_f32(-0.3, 0.3),
                z0: -200.0,
                z1: 200.0,
                end_round: 4.0,
            }),
        ));
        // Piriformis below the joint, out through the sciatic notch.
        let zp = jn.z_lo;
        let wp = w_at(zp);
        let yap = s.y_ant(wp, zp);
        let rp = rng.uniform_f32(8.0, 12.0) * bulk;
        muscles.push((
            "piriformis",
            Arc::new(Stroke {
                // Thickest a little below the joint, tapering to nothing above it.
                pts: vec![
                    (
                        Lin::c(sg * 0.42 * wp),
                        Lin::c(yap + 6.0),
                        Lin::through3([zp - 60.0, zp - 15.0, zp + 12.0], [rp * 0.5, rp * 0.8, 0.0]),
                    ),
                    (
                        Lin::c(sg * (wp + 10.0)),
                        Lin::c(yap + 12.0),
                        Lin::through3([zp - 60.0, zp - 15.0, zp + 12.0], [rp * 0.7, rp, 0.0]),
                    ),
                    (
                        Lin::c(sg * (wp + 50.0)),
                        Lin::c(yap + 20.0),
                        Lin::through3([zp - 60.0, zp - 15.0, zp + 12.0], [rp * 0.7, rp, 0.0]),
                    ),
                ],
                z0: zp - 70.0,
                z1: zp + 12.0,
                end_round: 8.0,
            }),
        ));
    }
    let para_back: Vec<f32> = [0.6, 1.0, 1.2].iter().map(|f| rng.uniform_f32(22.0, 42.0) * bulk * f).collect();
    let para_back: Vec<f32> = (0..3).map(|l| s.y_post(0.0, ZS[l]) + para_back[l]).collect();
    let midline = EllipseZ {
        cx: Lin::c(0.0),
        cy: Lin::through3(ZS, [para_back[0] - 30.0, para_back[1] - 30.0, para_back[2] - 30.0]),
        rx: Lin::c(rng.uniform_f32(0.6, 1.2)),
        ry: Lin::c(60.0),
        angle: 0.0,
        z0: -200.0,
        z1: 200.0,
        end_round: 4.0,
    };

    // Body outline from the muscles plus subcutaneous fat.
    let depth = rng.uniform_f32(70.0, 115.0) * size;
    let wall = rng.uniform_f32(6.0, 14.0) * bulk;
    let front_inner: Vec<f32> = ZS.iter().map(|&z| s.y_ant_mid(z) - depth - 10.0 * z / 55.0).collect();
    let hab = patient.habitus as f32;
    let fat = (5.0 + 32.0 * hab + if male { 0.0 } else { rng.uniform_f32(0.0, 12.0) }) * rng.uniform_f32(0.85, 1.15);
    let fat_prof = FatProfile {
        base: fat,
        lateral: fat * rng.uniform_f32(-0.2, 0.5),
        posterior: fat * rng.uniform_f32(-0.2, 0.4),
        anterior: fat * rng.uniform_f32(-0.3, 0.7),
        ripple: {
            let amp = fat * rng.uniform_f32(0.05, 0.2);
            super::noise::Bumps::new(rng, [-300.0, -300.0], [300.0, 300.0], [45.0, 45.0], amp)
        },
    };
    let half_w: Vec<f32> = (0..3).map(|l| lateral[0][l].max(lateral[1][l]) + fat + fat_prof.lateral.max(0.0)).collect();
    let yb: Vec<f32> = (0..3)
        .map(|l| posterior[0][l].max(posterior[1][l]).max(para_back[l]) + fat + fat_prof.posterior.max(0.0))
        .collect();
    let yf: Vec<f32> = (0..3).map(|l| front_inner[l] - wall - fat - fat_prof.anterior.max(0.0)).collect();
    let body = Arc::new(BodyOutline {
        a: Lin::through3(ZS, [half_w[0], half_w[1], half_w[2]]),
        yf: Lin::through3(ZS, [yf[0], yf[1], yf[2]]),
        yb: Lin::through3(ZS, [yb[0], yb[1], yb[2]]),
        round: rng.uniform_f32(0.45, 0.9),
        flat: rng.uniform_f32(4.0, 14.0),
        cleft_z: jn_mid(&joints) - rng.uniform_f32(0.0, 30.0),
        cleft_depth: rng.uniform_f32(10.0, 35.0) + fat * 0.5,
    });
    let cavity = Cavity {
        wall,
        back_mid: Lin::through3(ZS, ZS.map(|z| s.y_ant_mid(z) + 4.0)),
        tip_x: Lin::through3(ZS, [0, 1, 2].map(|l| 0.5 * (cav_tip[0][l].0 + cav_tip[1][l].0))),
        tip_y: Lin::through3(ZS, [0, 1, 2].map(|l| 0.5 * (cav_tip[0][l].1 + cav_tip[1][l].1))),
    };
    let fascia = Arc::new(Fascia { body: body.clone(), fat: fat_prof });

    // Fat planes inside muscles (intermuscular fat).
    for il in ilia.iter() {
        let sg = il.joint.side.sigma();
        for _ in 0..rng.int(0, 3) {
            let z = rng.uniform_f32(-50.0, 50.0);
            let pts = il.wing_points(z);
            let k = rng.int(1, 4) as usize;
            let (x, y) = (pts[k].0 + rng.uniform_f32(10.0, 35.0), pts[k].1 + rng.uniform_f32(10.0, 35.0));
            let ang = rng.uniform_f32(0.0, std::f32::consts::PI);
            let len = rng.uniform_f32(8.0, 30.0);
            septa.push(Arc::new(Capsule {
                a: [sg * x, y, z - len],
                b: [sg * (x + len * ang.cos() * 0.5), y + len * ang.sin() * 0.5, z + len],
                r: rng.uniform_f32(0.6, 1.6),
            }));
        }
    }

    // Bowel: loops in the pelvis and the rectosigmoid in front of the lower sacrum.
    let mut bowel = Vec::new();
    let cavity = Arc::new(cavity);
    let cavity_field = Arc::new(Compartment::cavity(fascia.clone(), cavity.clone()));
    let xmax = body.a.at(0.0);
    let (yf0, yb0) = (body.yf.at(0.0), s.y_ant_mid(0.0));
    // Colon segments (the small bowel is a texture, see `BowelNet`).
    let n_loops = rng.int(3, 8);
    let mut tries = 0;
    while bowel.len() < n_loops as usize && tries < 400 {
        tries += 1;
        let c = [rng.uniform_f32(-xmax, xmax), rng.uniform_f32(yf0, yb0), rng.uniform_f32(-70.0, 70.0)];
        let r = rng.uniform_f32(8.0, 17.0);
        if cavity_field.dist(c) > -0.6 * r {
            continue;
        }
        let dir =
            super::sdf::normalize([rng.uniform_f32(-1.0, 1.0), rng.uniform_f32(-1.0, 1.0), rng.uniform_f32(-1.5, 1.5)]);
        let len = rng.uniform_f32(10.0, 45.0);
        bowel.push(Bowel {
            tube: Capsule {
                a: [c[0] - dir[0] * len, c[1] - dir[1] * len, c[2] - dir[2] * len],
                b: [c[0] + dir[0] * len, c[1] + dir[1] * len, c[2] + dir[2] * len],
                r,
            },
            wall: rng.uniform_f32(1.5, 3.0),
            content: [BowelContent::Gas, BowelContent::Fluid, BowelContent::Faeces, BowelContent::Chyme]
                [rng.weighted(&[0.15, 0.2, 0.25, 0.4])],
        });
    }
    let rx = rng.jitter(12.0);
    bowel.push(Bowel {
        tube: Capsule {
            a: [rx, s.y_ant_mid(-80.0) - 18.0, -110.0],
            b: [rx + rng.jitter(15.0), s.y_ant_mid(-10.0) - 22.0, rng.uniform_f32(-30.0, 10.0)],
            r: rng.uniform_f32(12.0, 20.0),
        },
        wall: rng.uniform_f32(2.0, 3.5),
        content: [BowelContent::Gas, BowelContent::Faeces][rng.weighted(&[0.35, 0.65])],
    });

    // Iliac vessels (artery, vein) and the lumbosacral nerve roots in front of the sacrum.
    let mut vessels = Vec::new();
    for jn in joints.iter() {
        let sg = jn.side.sigma();
        let wa = jn.j(jn.ya.at(0.0), 0.0).0;
        let ya = s.y_ant(wa, 0.0);
        let ext_a = [sg * (0.5 * wa + rng.jitter(5.0)), s.y_ant_mid(60.0) - 30.0, 70.0];
        let ext_b = [sg * (wa + 22.0 + rng.jitter(6.0)), ya - 38.0 + rng.jitter(6.0), -70.0];
        let ra = rng.uniform_f32(3.5, 5.0);
        vessels.push((Capsule { a: ext_a, b: ext_b, r: ra }, true));
        vessels.push((
            Capsule {
                a: [ext_a[0] - sg * 4.0, ext_a[1] + ra + 5.0, ext_a[2]],
                b: [ext_b[0] - sg * 6.0, ext_b[1] + ra + 6.0, ext_b[2]],
                r: rng.uniform_f32(5.0, 8.0),
            },
            false,
        ));
        let int_a = [sg * (0.55 * wa + rng.jitter(4.0)), s.y_ant_mid(40.0) - 18.0, 45.0];
        let int_b = [sg * (0.8 * wa + rng.jitter(5.0)), ya - 8.0, -50.0];
        vessels.push((Capsule { a: int_a, b: int_b, r: rng.uniform_f32(2.5, 4.0) }, true));
        vessels.push((
            Capsule {
                a: [int_a[0] + sg * 3.0, int_a[1] + 7.0, int_a[2]],
                b: [int_b[0] + sg * 4.0, int_b[1] + 7.0, int_b[2]],
                r: rng.uniform_f32(3.0, 5.5),
            },
            false,
        ));
    }
    let nerves = sacrum
        .foramina
        .iter()
        .map(|f| {
            let d = super::sdf::normalize([f.b[0] - f.a[0], f.b[1] - f.a[1], f.b[2] - f.a[2]]);
            let ext = 18.0;
            Capsule {
                a: f.a,
                b: [f.b[0] + d[0] * ext, f.b[1] + d[1] * ext, f.b[2] + d[2] * ext - 6.0],
                r: (0.35 * f.r).max(1.4),
            }
        })
        .collect();

    let disc_remnant =
        rng.chance(0.8).then(|| (z_top - rng.uniform_f32(22.0, 30.0), rng.uniform_f32(1.5, 3.5), rng.jitter(0.15)));

    Pelvis {
        joints,
        sacrum,
        ilia,
        l5,
        fascia,
        body,
        cavity,
        cavity_field,
        muscles,
        septa,
        midline,
        bowel,
        vessels,
        nerves,
        disc_remnant,
        bulk,
        fat_infiltration,
    }
}

fn jn_mid(j: &[Joint; 2]) -> f32 {
    0.5 * (j[0].z_lo + j[1].z_lo)
}

/// The skin outline: a superellipse flattened against the table behind, with the natal cleft
/// opening below the joints.
pub struct BodyOutline {
    pub a: Lin,
    pub yf: Lin,
    pub yb: Lin,
    /// Corner rounding (fraction of the smaller half side).
    pub round: f32,
    pub flat: f32,
    pub cleft_z: f32,
    pub cleft_depth: f32,
}

impl Field for BodyOutline {
    fn dist(&self, p: V3) -> f32 {
        let [x, y, z] = p;
        let (yf, yb) = (self.yf.at(z), self.yb.at(z));
        let cy = 0.5 * (yf + yb);
        let b = 0.5 * (yb - yf);
        let a = self.a.at(z);
        let mut d = rounded_box(x, y - cy, a, b, self.round);
        d = smax(d, y - (yb - self.flat), 20.0);
        let cleft = super::sdf::smoothstep(self.cleft_z, self.cleft_z - 25.0, z) * self.cleft_depth;
        if cleft > 0.5 {
            d = smax(d, -ellipse2(x, y - yb, 3.0 + 0.25 * cleft, cleft), 4.0);
        }
        d
    }
    fn bounds(&self) -> Aabb {
        let (a0, a1) = self.a.range(-250.0, 250.0);
        let (f0, _) = self.yf.range(-250.0, 250.0);
        let (_, b1) = self.yb.range(-250.0, 250.0);
        let _ = a0;
        Aabb::new([-a1, f0, -250.0], [a1, b1, 250.0])
    }
}

/// Distance to a rectangle of half sides `a, b` whose corners are rounded with radius
/// `round * min(a, b)` (exact).
#[inline]
pub fn rounded_box(x: f32, y: f32, a: f32, b: f32, round: f32) -> f32 {
    let r = round * a.min(b);
    let (qx, qy) = (x.abs() - (a - r), y.abs() - (b - r));
    let (ox, oy) = (qx.max(0.0), qy.max(0.0));
    (ox * ox + oy * oy).sqrt() + qx.max(qy).min(0.0) - r
}

/// Subcutaneous fat thickness around the body: more laterally, behind or in front as drawn,
/// with slow irregular variation.
#[derive(Clone, Debug)]
pub struct FatProfile {
    pub base: f32,
    pub lateral: f32,
    pub posterior: f32,
    pub anterior: f32,
    pub ripple: super::noise::Bumps,
}

impl FatProfile {
    #[inline]
    pub fn at(&self, body: &BodyOutline, p: V3) -> f32 {
        let [x, y, z] = p;
        let (yf, yb) = (body.yf.at(z), body.yb.at(z));
        let u = x / body.a.at(z);
        let v = (2.0 * y - yf - yb) / (yb - yf);
        let t = self.base
            + self.lateral * u * u
            + self.posterior * v.max(0.0).powi(2)
            + self.anterior * (-v).max(0.0).powi(2)
            + self.ripple.height(x, y);
        t.max(2.0)
    }
}

/// The deep fascia: the body outline moved in by the subcutaneous fat.
pub struct Fascia {
    pub body: Arc<BodyOutline>,
    pub fat: FatProfile,
}

impl Field for Fascia {
    fn dist(&self, p: V3) -> f32 {
        self.body.dist(p) + self.fat.at(&self.body, p)
    }
    fn bounds(&self) -> Aabb {
        self.body.bounds()
    }
}

/// The pelvic cavity: inside the abdominal wall (the fascia moved in by the wall's thickness)
/// and in front of a curve from the sacrum's anterior surface out to the inner faces of the
/// iliac wings.
#[derive(Clone, Debug)]
pub struct Cavity {
    pub wall: f32,
    pub back_mid: Lin,
    pub tip_x: Lin,
    pub tip_y: Lin,
}

impl Cavity {
    /// Distance (about normal) in front of the posterior curve (negative in front).
    #[inline]
    pub fn back(&self, p: V3) -> f32 {
        let [x, y, z] = p;
        let (m, tx, ty) = (self.back_mid.at(z), self.tip_x.at(z).max(20.0), self.tip_y.at(z));
        let u = x / tx;
        let yb = m + (ty - m) * u * u;
        let slope = 2.0 * (ty - m) * x / (tx * tx);
        (y - yb) / (1.0 + slope * slope).sqrt()
    }

    #[inline]
    pub fn dist_given(&self, fascia: f32, p: V3) -> f32 {
        smax(fascia + self.wall, self.back(p), 10.0)
    }
}

/// Inside the fascia and outside the cavity (`inside = false`), or inside both.
pub struct Compartment {
    pub fascia: Arc<Fascia>,
    pub cavity: Arc<Cavity>,
    pub inside: bool,
}

impl Compartment {
    pub fn cavity(fascia: Arc<Fascia>, cavity: Arc<Cavity>) -> Self {
        Compartment { fascia, cavity, inside: true }
    }
}

impl Field for Compartment {
    fn dist(&self, p: V3) -> f32 {
        let f = self.fascia.dist(p);
        let c = self.cavity.dist_given(f, p);
        if self.inside {
            c
        } else {
            f.max(-c)
        }
    }
    fn bounds(&self) -> Aabb {
        self.fascia.bounds()
    }
}

/// Small-bowel loops: where a smooth random field is near zero (a ridged network of tubes),
/// inside the pelvic cavity.
pub struct BowelNet {
    pub tex: Texture,
    pub width: f32,
    pub lattice: Arc<super::noise::Lattice>,
    pub cavity: Arc<Compartment>,
}

impl Field for BowelNet {
    fn dist(&self, p: V3) -> f32 {
        // Behind the cavity's posterior curve: no need for the (dearer) wall distance.
        let back = self.cavity.cavity.back(p);
        if back > 10.0 {
            return back;
        }
        // The field changes by about 1.5 per lattice cell: distance ~ value / slope.
        let n = self.tex.fbm2(&self.lattice, p).abs() - self.width;
        let d = n / (1.5 * self.tex.inv_scale[0]);
        if d > 10.0 {
            return d;
        }
        d.max(self.cavity.dist(p))
    }
    fn bounds(&self) -> Aabb {
        self.cavity.bounds()
    }
}

/// `a` inside `b` (both trait objects).
pub struct Clip {
    pub a: Box<dyn Field>,
    pub b: Arc<dyn Field>,
    pub grow: f32,
}

impl Field for Clip {
    fn dist(&self, p: V3) -> f32 {
        let d = self.a.dist(p);
        if d > 10.0 {
            return d;
        }
        d.max(self.b.dist(p) + self.grow)
    }
    fn bounds(&self) -> Aabb {
        self.a.bounds()
    }
}

/// The S1-S2 disc remnant: a thin plate across the sacral body.
pub struct Plate {
    pub z: f32,
    pub half: f32,
    pub slope: f32,
    pub cy: f32,
    pub r: [f32; 2],
}

impl Field for Plate {
    fn dist(&self, p: V3) -> f32 {
        let zc = self.z + self.slope * (p[1] - self.cy);
        smax((p[2] - zc).abs() - self.half, ellipse2(p[0], p[1] - self.cy, self.r[0], self.r[1]), 2.0)
    }
    fn bounds(&self) -> Aabb {
        let dz = self.half + self.slope.abs() * self.r[1] + 1.0;
        Aabb::new([-self.r[0], self.cy - self.r[1], self.z - dz], [self.r[0], self.cy + self.r[1], self.z + dz])
    }
}

/// The sacral canal (below and above the sacrum's top): epidural fat with nerve roots.
pub struct Canal {
    pub sacrum: Arc<Sacrum>,
    pub shrink: f32,
    pub z0: f32,
}

impl Field for Canal {
    fn dist(&self, p: V3) -> f32 {
        smax(self.sacrum.canal(p) + self.shrink, self.z0 - p[2], 4.0)
    }
    fn bounds(&self) -> Aabb {
        let s = &self.sacrum.s;
        let w = s.canal_w.range(-150.0, 150.0).1 * 1.4 + 2.0;
        let (y0, _, _) = s.canal_centre(s.z_top);
        let (y1, _, _) = s.canal_centre(-140.0);
        let h = s.canal_h.range(-150.0, 150.0).1 + 2.0;
        Aabb::new([-w, y0.min(y1) - h - 4.0, self.z0.max(s.z_bottom)], [w, y0.max(y1) + h + 4.0, 150.0])
    }
}

/// The L5 posterior arch (laminae and spinous process) above the sacrum.
pub struct L5Arch {
    pub sacrum: Arc<Sacrum>,
    pub z0: f32,
}

impl Field for L5Arch {
    fn dist(&self, p: V3) -> f32 {
        let s = &self.sacrum.s;
        let (yc, w, h) = s.canal_centre(p[2]);
        let ring = ellipse2(p[0], p[1] - yc, w + 7.0, h + 6.0).max(-ellipse2(p[0], p[1] - yc, w, h));
        let ring = ring.max(yc - 2.0 - p[1]);
        let (d, _) = super::sdf::segment2(p[0], p[1], 0.0, yc + h + 4.0, 0.0, yc + h + 30.0);
        let spin = d - 4.5;
        smax(super::sdf::smin(ring, spin, 3.0), self.z0 - p[2], 3.0)
    }
    fn bounds(&self) -> Aabb {
        let s = &self.sacrum.s;
        let (yc, w, h) = s.canal_centre(s.z_top);
        Aabb::new([-w - 10.0, yc - h - 8.0, self.z0], [w + 10.0, yc + h + 40.0, 200.0])
    }
}

/// Shaders and layers of the normal anatomy.
pub struct Painter<'a> {
    pub c: &'a Contrast,
    pub lattice: Arc<Lattice>,
    pub rng: &'a mut Rng,
}

impl Painter<'_> {
    pub fn fat(&mut self, level: f32) -> Textured {
        Textured {
            base: level,
            amp: self.rng.uniform_f32(0.015, 0.04),
            tex: Texture::isotropic(self.rng, 7.0),
            lattice: self.lattice.clone(),
        }
    }
    pub fn muscle(&mut self, infiltration: f32) -> Mottled {
        Mottled {
            a: self.c.muscle * self.rng.uniform_f32(0.92, 1.08),
            b: self.c.fat * 0.9,
            share: (infiltration * self.rng.uniform_f32(0.5, 1.5)).min(0.25),
            soft: 0.05,
            tex: Texture::new(self.rng, [3.0, 3.0, 14.0]),
            grain: self.rng.uniform_f32(0.03, 0.07),
            lattice: self.lattice.clone(),
        }
    }
    pub fn marrow(&mut self, joints: Arc<[Joint; 2]>, share: f32, focus: Option<(V3, f32, f32)>) -> Marrow {
        let (ps, fs) = (self.rng.uniform_f32(6.0, 14.0), self.rng.uniform_f32(0.9, 1.6));
        Marrow {
            red: self.c.red_marrow,
            yellow: self.c.yellow_marrow,
            patch: Texture::isotropic(self.rng, ps),
            fine: Texture::isotropic(self.rng, fs),
            share,
            soft: self.rng.uniform_f32(0.08, 0.25),
            fine_amp: self.rng.uniform_f32(0.03, 0.08),
            drift_amp: self.rng.uniform_f32(0.03, 0.1),
            joints,
            clear: self.rng.uniform_f32(7.0, 10.0),
            focus,
            lattice: self.lattice.clone(),
        }
    }
}

/// The normal anatomy's layers, split where confounders and lesions go in.
pub struct AnatomyLayers {
    pub soft: Vec<Layer>,
    pub bone: Vec<Layer>,
    pub after: Vec<Layer>,
}

pub fn anatomy_layers(pv: &Pelvis, p: &mut Painter, age: f64) -> AnatomyLayers {
    let c = p.c.clone();
    let mut soft = Vec::new();
    let fat = p.fat(c.fat);
    let skin = p.rng.uniform_f32(1.0, 2.2);
    soft.push(Layer::new("body", pv.body.clone(), Flat(c.skin)).band(skin, fat));
    let shade = p.muscle(pv.fat_infiltration);
    soft.push(Layer::new(
        "muscle",
        Compartment { fascia: pv.fascia.clone(), cavity: pv.cavity.clone(), inside: false },
        shade,
    ));
    let septum_fat = c.fat * 0.92;
    soft.push(Layer::new(
        "midline septum",
        Clip { a: Box::new(pv.midline.clone()), b: pv.fascia.clone(), grow: 0.0 },
        Flat(septum_fat),
    ));
    for s in &pv.septa {
        soft.push(Layer::new(
            "fat plane",
            Clip { a: Box::new(s.clone()), b: pv.fascia.clone(), grow: 0.0 },
            Flat(septum_fat),
        ));
    }
    let level = c.fat * p.rng.uniform_f32(0.9, 1.0);
    let pelvic_fat = p.fat(level);
    soft.push(Layer::new(
        "pelvic fat",
        Compartment { fascia: pv.fascia.clone(), cavity: pv.cavity.clone(), inside: true },
        pelvic_fat,
    ));
    // Small-bowel loops: a tangle of tubes through the cavity.
    let scale = p.rng.uniform_f32(18.0, 30.0);
    let net = BowelNet {
        tex: Texture::isotropic(p.rng, scale),
        width: p.rng.uniform_f32(0.18, 0.32),
        lattice: p.lattice.clone(),
        cavity: pv.cavity_field.clone(),
    };
    let chyme = Mottled {
        a: p.rng.uniform_f32(0.22, 0.5),
        b: p.rng.uniform_f32(0.0, 0.12),
        share: p.rng.uniform_f32(0.0, 0.2),
        soft: 0.1,
        tex: Texture::isotropic(p.rng, 6.0),
        grain: 0.1,
        lattice: p.lattice.clone(),
    };
    let wall = p.rng.uniform_f32(1.2, 2.5);
    soft.push(Layer::new("small bowel", net, Flat(c.bowel_wall)).band(wall, chyme));
    for b in &pv.bowel {
        let content: Box<dyn Shade> = match b.content {
            BowelContent::Gas => Box::new(Flat(p.rng.uniform_f32(0.0, 0.05))),
            BowelContent::Fluid => Box::new(Flat(c.fluid)),
            BowelContent::Chyme => {
                let level = p.rng.uniform_f32(0.22, 0.5);
                Box::new(p.fat(level))
            }
            BowelContent::Faeces => Box::new(Mottled {
                a: p.rng.uniform_f32(0.35, 0.65),
                b: p.rng.uniform_f32(0.0, 0.1),
                share: p.rng.uniform_f32(0.05, 0.3),
                soft: 0.1,
                tex: Texture::isotropic(p.rng, 4.0),
                grain: 0.15,
                lattice: p.lattice.clone(),
            }),
        };
        let tube = Capsule { a: b.tube.a, b: b.tube.b, r: b.tube.r };
        let mut l =
            Layer::new("bowel", Clip { a: Box::new(tube), b: pv.cavity_field.clone(), grow: 0.0 }, Flat(c.bowel_wall));
        l.bands.push(super::scene::Band { offset: b.wall, shade: content });
        soft.push(l);
    }
    for (v, artery) in &pv.vessels {
        let level = if *artery { c.artery } else { c.vein * p.rng.uniform_f32(0.8, 1.2) };
        soft.push(Layer::new("vessel", Capsule { a: v.a, b: v.b, r: v.r }, Flat(level)));
    }
    for (name, field) in &pv.muscles {
        let shade = p.muscle(pv.fat_infiltration);
        soft.push(Layer::new(name, field.clone(), shade));
    }
    let lig_fat = p.rng.uniform_f32(0.05, 0.3);
    for jn in pv.joints.iter() {
        let depth = p.rng.uniform_f32(10.0, 20.0);
        let shade = Mottled {
            a: c.ligament,
            b: c.fat * 0.85,
            share: lig_fat,
            soft: 0.2,
            tex: Texture::new(p.rng, [2.5, 4.0, 6.0]),
            grain: 0.1,
            lattice: p.lattice.clone(),
        };
        soft.push(Layer::new("interosseous ligament", Ligament { joint: jn.clone(), depth }, shade));
        let cart = c.cartilage * p.rng.uniform_f32(0.9, 1.1);
        soft.push(Layer::new("joint space", JointSpace { joint: jn.clone() }, Flat(cart)));
    }
    let disc = Flat(c.disc);
    soft.push(Layer::new(
        "L5-S1 disc",
        L5Body {
            cy: pv.l5.cy,
            r: [pv.l5.r[0] + 1.0, pv.l5.r[1] + 1.0],
            z0: pv.sacrum.s.z_top - 4.0,
            z1: pv.l5.z0 + 2.0,
        },
        disc,
    ));

    // Bones: cortex, then marrow.
    let young = ((age - 16.0) / 30.0).clamp(0.0, 1.0) as f32;
    let share_s = p.rng.uniform_f32(0.05, 0.25) + 0.15 * young;
    let share_i = p.rng.uniform_f32(0.02, 0.2) + 0.1 * young;
    let s = &pv.sacrum.s;
    let body_c = [0.0, s.y_ant_mid(0.0) + 15.0, s.z_top - 20.0];
    let mut bone = Vec::new();
    let focus = Some((body_c, p.rng.uniform_f32(15.0, 30.0), p.rng.uniform_f32(0.0, 0.6)));
    let m = p.marrow(pv.joints.clone(), share_s, focus);
    bone.push(Layer::new("sacrum", pv.sacrum.clone(), Flat(c.cortex)).band(s.cortex, m));
    for il in pv.ilia.iter() {
        let jn = &il.joint;
        let wing = il.wing_points(0.0)[3];
        let focus = [jn.side.sigma() * wing.0, wing.1, 0.0];
        let focus = Some((focus, p.rng.uniform_f32(15.0, 35.0), p.rng.uniform_f32(0.0, 0.8)));
        let m = p.marrow(pv.joints.clone(), share_i, focus);
        bone.push(Layer::new("ilium", il.clone(), Flat(c.cortex)).band(jn.cortex[1], m));
    }
    let m = p.marrow(pv.joints.clone(), share_s, None);
    bone.push(
        Layer::new("L5 body", L5Body { cy: pv.l5.cy, r: pv.l5.r, z0: pv.l5.z0, z1: pv.l5.z1 }, Flat(c.cortex))
            .band(s.cortex, m),
    );
    let m = p.marrow(pv.joints.clone(), share_s, None);
    bone.push(
        Layer::new("L5 arch", L5Arch { sacrum: pv.sacrum.clone(), z0: pv.l5.z0 + 6.0 }, Flat(c.cortex))
            .band(s.cortex, m),
    );
    if let Some((z, t, slope)) = pv.disc_remnant {
        let plate =
            Plate { z, half: 0.5 * t, slope, cy: s.y_ant_mid(z) + s.l5[1], r: [s.l5[0] * 0.85, s.l5[1] * 0.85] };
        bone.push(Layer::new(
            "S1-S2 disc remnant",
            Clip { a: Box::new(plate), b: pv.sacrum.clone(), grow: s.cortex },
            Flat(c.disc * p.rng.uniform_f32(1.0, 1.4)),
        ));
    }

    // Contents of the canal and foramina, drawn over bone.
    let mut after = Vec::new();
    let roots = Mottled {
        a: c.fat * 0.95,
        b: c.nerve,
        share: p.rng.uniform_f32(0.1, 0.25),
        soft: 0.05,
        tex: Texture::new(p.rng, [2.0, 2.0, 10.0]),
        grain: 0.02,
        lattice: p.lattice.clone(),
    };
    after.push(Layer::new("sacral canal", Canal { sacrum: pv.sacrum.clone(), shrink: 0.0, z0: -140.0 }, roots));
    let epi = p.rng.uniform_f32(1.2, 3.0);
    after.push(Layer::new(
        "thecal sac",
        Canal { sacrum: pv.sacrum.clone(), shrink: epi, z0: s.z_sac_end },
        Flat(c.csf),
    ));
    let foramen_fat = p.fat(c.fat * 0.95);
    after.push(Layer::new(
        "foramina",
        Clip { a: Box::new(Foramina(pv.sacrum.clone())), b: Arc::new(SacrumSolid(pv.sacrum.clone())), grow: -0.5 },
        foramen_fat,
    ));
    for n in &pv.nerves {
        after.push(Layer::new("nerve root", Capsule { a: n.a, b: n.b, r: n.r }, Flat(c.nerve)));
    }
    AnatomyLayers { soft, bone, after }
}

struct Foramina(Arc<Sacrum>);
impl Field for Foramina {
    fn dist(&self, p: V3) -> f32 {
        self.0.foramina_dist(p)
    }
    fn bounds(&self) -> Aabb {
        self.0.foramina.iter().map(|f| f.bounds()).reduce(|a, b| a.union(&b)).unwrap_or(Aabb::new([0.0; 3], [-1.0; 3]))
    }
}

struct SacrumSolid(Arc<Sacrum>);
impl Field for SacrumSolid {
    fn dist(&self, p: V3) -> f32 {
        self.0.solid(p)
    }
    fn bounds(&self) -> Aabb {
        self.0.bounds()
    }
}
