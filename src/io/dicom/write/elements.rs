//! Small helpers for building datasets: value formatting within DICOM's VR limits, UIDs, and a
//! dataset builder with one method per value kind.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::InMemDicomObject;

/// A decimal string (DS) of at most 16 characters, the closest to `v` that fits.
pub fn ds(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".to_string();
    }
    let plain = format!("{v}");
    if plain.len() <= 16 {
        return plain;
    }
    let mut best: Option<(f64, String)> = None;
    let mut consider = |s: String| {
        if s.len() <= 16 {
            if let Ok(x) = s.parse::<f64>() {
                let err = (x - v).abs();
                if best.as_ref().is_none_or(|(e, _)| err < *e) {
                    best = Some((err, s));
                }
            }
        }
    };
    for prec in 0..=15 {
        consider(format!("{v:.prec$}"));
        consider(format!("{v:.prec$e}"));
    }
    best.map(|(_, s)| s).unwrap_or_else(|| "0".to_string())
}

/// Several DS values, backslash-separated.
pub fn ds_multi(vs: &[f64]) -> String {
    vs.iter().map(|&v| ds(v)).collect::<Vec<_>>().join("\\")
}

/// A UID under the `2.25.` root (PS3.5 B.2: the decimal form of a UUID), here a name-based
/// (SHA-1, version 5) UUID of `parts`, so a given seed always gives the same UIDs.
pub fn deterministic_uid(parts: &[&str]) -> String {
    let name = format!("fmseg:{}", parts.join("/"));
    let u = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes());
    format!("2.25.{}", u.as_u128())
}

/// A dataset under construction.
pub struct Builder(pub InMemDicomObject);

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    pub fn new() -> Self {
        Builder(InMemDicomObject::new_empty())
    }

    pub fn str(&mut self, tag: Tag, vr: VR, s: &str) -> &mut Self {
        self.0.put(DataElement::new(tag, vr, PrimitiveValue::from(s)));
        self
    }

    /// A type 2 attribute: present, empty.
    pub fn empty(&mut self, tag: Tag, vr: VR) -> &mut Self {
        self.0.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
        self
    }

    pub fn ds(&mut self, tag: Tag, vs: &[f64]) -> &mut Self {
        self.str(tag, VR::DS, &ds_multi(vs))
    }

    pub fn is(&mut self, tag: Tag, v: i64) -> &mut Self {
        self.str(tag, VR::IS, &v.to_string())
    }

    pub fn us(&mut self, tag: Tag, v: u16) -> &mut Self {
        self.0.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        self
    }

    pub fn ul(&mut self, tag: Tag, vs: &[u32]) -> &mut Self {
        self.0.put(DataElement::new(tag, VR::UL, PrimitiveValue::U32(vs.iter().copied().collect())));
        self
    }

    pub fn fd(&mut self, tag: Tag, vs: &[f64]) -> &mut Self {
        self.0.put(DataElement::new(tag, VR::FD, PrimitiveValue::F64(vs.iter().copied().collect())));
        self
    }

    pub fn at(&mut self, tag: Tag, t: Tag) -> &mut Self {
        self.0.put(DataElement::new(tag, VR::AT, PrimitiveValue::Tags(std::iter::once(t).collect())));
        self
    }

    pub fn seq(&mut self, tag: Tag, items: Vec<InMemDicomObject>) -> &mut Self {
        self.0.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
        self
    }

    /// A sequence of one item built by `f`.
    pub fn item(&mut self, tag: Tag, f: impl FnOnce(&mut Builder)) -> &mut Self {
        let mut b = Builder::new();
        f(&mut b);
        self.seq(tag, vec![b.0])
    }

    pub fn put(&mut self, e: DataElement<InMemDicomObject>) -> &mut Self {
        self.0.put(e);
        self
    }

    pub fn build(self) -> InMemDicomObject {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_and_is_close() {
        for v in [0.0, 1.0, -0.5, 0.9781476007338057, -123.45678901234567, 1e-20, 6.02e23, 12.5, -0.20791169081775931] {
            let s = ds(v);
            assert!(s.len() <= 16, "{s}");
            let back: f64 = s.parse().unwrap();
            assert!((back - v).abs() <= 1e-12 * v.abs().max(1.0), "{v} -> {s}");
        }
        assert_eq!(ds(12.5), "12.5");
        assert_eq!(ds_multi(&[1.0, 0.5]), "1\\0.5");
    }

    #[test]
    fn uids_are_deterministic_and_valid() {
        let a = deterministic_uid(&["seed", "study"]);
        assert_eq!(a, deterministic_uid(&["seed", "study"]));
        assert_ne!(a, deterministic_uid(&["seed", "series"]));
        assert!(a.starts_with("2.25.") && a.len() <= 64);
        assert!(a[5..].chars().all(|c| c.is_ascii_digit()) && !a[5..].starts_with('0'));
    }
}
