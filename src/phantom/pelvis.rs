//! Draws one patient's pelvis: bones and joints, muscles, the pelvic cavity and its contents,
//! vessels and nerve roots, subcutaneous fat and the body outline ([`super::layers`] turns it
//! into what the renderer paints).

use super::anatomy::{sample_joint, Foramen, Ilium, IliumShape, Joint, JointCommon, L5Body, Sacrum, SacrumShape, Side};
use super::patient::{Patient, Sex};
use super::rng::Rng;
use super::sdf::{Aabb, Capsule, EllipseZ, Field, Lin, Stroke};
use super::shapes::{BodyOutline, Cavity, Compartment, Fascia, FatProfile};
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
    let size = if male { rng.uniform_f32(0.93, 1.14) } else { rng.uniform_f32(0.86, 1.06) };

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
        beta_deg: rng.uniform_f32(12.0, 34.0),
        tanb_slope: rng.uniform_f32(0.05, 0.25),
        kappa: rng.uniform_f32(-0.08, 0.12),
        h: rng.uniform_f32(0.65, 1.9),
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
    let fat_infiltration = rng.uniform_f32(0.02, 0.08)
        + if male { 0.0 } else { 0.03 }
        + patient.age_years as f32 * 0.0015 * rng.uniform_f32(0.5, 1.5);
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
    let depth = rng.uniform_f32(95.0, 150.0) * size;
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
        for _ in 0..rng.int(0, 4) {
            let z = rng.uniform_f32(-50.0, 50.0);
            let pts = il.wing_points(z);
            let k = rng.int(1, 4) as usize;
            let (x, y) = (pts[k].0 + rng.uniform_f32(10.0, 35.0), pts[k].1 + rng.uniform_f32(10.0, 35.0));
            let ang = rng.uniform_f32(0.0, std::f32::consts::PI);
            let len = rng.uniform_f32(8.0, 30.0);
            septa.push(Arc::new(Capsule {
                a: [sg * x, y, z - len],
                b: [sg * (x + len * ang.cos() * 0.5), y + len * ang.sin() * 0.5, z + len],
                r: rng.uniform_f32(0.6, 2.2),
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
