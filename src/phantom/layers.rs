//! The normal anatomy as the renderer's ordered layers, with their tissue shaders: body fat,
//! muscle compartment, fat planes, pelvic fat and bowel, vessels, named muscles, joint space
//! and ligaments, bones (cortex then marrow), then the contents of the canal and foramina.

use super::anatomy::{Joint, JointSpace, L5Body, Ligament, Sacrum};
use super::noise::{Lattice, Texture};
use super::pelvis::{BowelContent, Pelvis};
use super::rng::Rng;
use super::scene::{Flat, Layer, Mottled, Shade, Textured};
use super::sdf::{Aabb, Capsule, Field, V3};
use super::shapes::{BowelNet, Canal, Clip, Compartment, L5Arch, Outside, Plate, Skin, Subcutis};
use super::tissue::{Contrast, Marrow};
use std::sync::Arc;

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
            clear: self.rng.uniform_f32(5.5, 10.0),
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
    // Painted back to front, each layer hiding what it covers: the body filled with (pelvic)
    // fat; the bowel and vessels; the muscle compartment, which hides whatever of them lies
    // inside the fascia but outside the pelvic cavity; fat planes and the named muscles; and
    // last the subcutaneous fat and skin, which hide anything outside the fascia. So nothing
    // needs clipping to the cavity or the fascia.
    let level = c.fat * p.rng.uniform_f32(0.9, 1.0);
    let pelvic_fat = p.fat(level);
    soft.push(Layer::new("pelvic fat", pv.body.clone(), pelvic_fat));
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
        let mut l = Layer::new("bowel", tube, Flat(c.bowel_wall));
        l.bands.push(super::scene::Band { offset: b.wall, shade: content });
        soft.push(l);
    }
    for (v, artery) in &pv.vessels {
        let level = if *artery { c.artery } else { c.vein * p.rng.uniform_f32(0.8, 1.2) };
        soft.push(Layer::new("vessel", Capsule { a: v.a, b: v.b, r: v.r }, Flat(level)));
    }
    let shade = p.muscle(pv.fat_infiltration);
    soft.push(Layer::new(
        "muscle",
        Compartment { fascia: pv.fascia.clone(), cavity: pv.cavity.clone(), inside: false },
        shade,
    ));
    let septum_fat = c.fat * 0.92;
    soft.push(Layer::new("midline septum", pv.midline.clone(), Flat(septum_fat)));
    for s in &pv.septa {
        soft.push(Layer::new("fat plane", s.clone(), Flat(septum_fat)));
    }
    for (name, field) in &pv.muscles {
        let shade = p.muscle(pv.fat_infiltration);
        soft.push(Layer::new(name, field.clone(), shade));
    }
    let fat = p.fat(c.fat);
    let skin = p.rng.uniform_f32(1.0, 2.2);
    soft.push(Layer::new("subcutaneous fat", Subcutis { fascia: pv.fascia.clone(), skin }, fat));
    soft.push(Layer::new("skin", Skin { body: pv.body.clone(), skin }, Flat(c.skin)));
    // Outside the body: air over anything that reaches beyond the skin.
    soft.push(Layer::new("air", Outside(pv.body.clone()), Flat(0.0)));
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
