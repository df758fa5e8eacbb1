//! Checking a loaded state dict against the network's catalog, and putting it in the
//! catalog's form: `module.` prefixes (DataParallel) stripped, keys in the reference's order,
//! shared-module aliases present and equal to their originals.

use std::collections::HashMap;
use std::path::Path;

use super::StateDict;
use crate::error::{Error, Result};
use crate::model::catalog;
use crate::tensor::HostTensor;

/// Most items of one kind listed in an error message.
const LIST_MAX: usize = 8;

/// The catalog's state dict from `sd`: every key the network has (aliases included, filled from
/// their originals or the other way round), in the reference's order. Any problem is an error
/// naming `path` and each offending key: missing or unexpected keys, wrong shapes (got vs
/// expected), NaN or infinite values, aliases whose values differ.
pub fn canonicalize(sd: &StateDict, path: &Path) -> Result<StateDict> {
    canonicalize_for(sd, path, &catalog::layers(), "the 2.5D-AttentionUNet")
}

/// [`canonicalize`] against any network's layers (`network` names it in messages): the
/// classifier's checkpoints are checked by the same rules.
pub fn canonicalize_for(sd: &StateDict, path: &Path, layers: &[catalog::Layer], network: &str) -> Result<StateDict> {
    // DataParallel / DistributedDataParallel prefix every key with `module.`.
    let mut keyed: Vec<(String, &str, &HostTensor)> = Vec::with_capacity(sd.len());
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (k, t) in sd.iter() {
        let mut s = k;
        while let Some(rest) = s.strip_prefix("module.") {
            s = rest;
        }
        if let Some(prev) = seen.insert(s.to_string(), k) {
            return Err(Error::weights(path, format!("keys '{prev}' and '{k}' both name '{s}'")));
        }
        keyed.push((s.to_string(), k, t));
    }
    let given: HashMap<&str, (&str, &HostTensor)> = keyed.iter().map(|(s, k, t)| (s.as_str(), (*k, *t))).collect();

    let expected: Vec<(String, Vec<usize>)> = layers.iter().flat_map(|l| l.tensors()).collect();
    let mut original_of: HashMap<String, String> = HashMap::new();
    for l in layers {
        if let Some(orig) = &l.alias_of {
            for (k, _) in l.tensors() {
                let o = format!("{orig}{}", &k[l.prefix.len()..]);
                original_of.insert(k, o);
            }
        }
    }
    // Each original with the keys that share its storage (itself first), in catalog order.
    let mut group: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    for (k, _) in &expected {
        let o = original_of.get(k).map(|s| s.as_str()).unwrap_or(k.as_str());
        let g = *group_of.entry(o).or_insert_with(|| {
            group.push((o, Vec::new()));
            group.len() - 1
        });
        group[g].1.push(k.as_str());
    }

    let mut missing = Vec::new();
    let mut shape_err = Vec::new();
    let mut value_err = Vec::new();
    let mut alias_err = Vec::new();
    let shapes: HashMap<&str, &Vec<usize>> = expected.iter().map(|(k, s)| (k.as_str(), s)).collect();
    for (k, want) in &expected {
        if let Some((orig_name, t)) = given.get(k.as_str()) {
            if &t.shape != want {
                shape_err.push(format!("'{orig_name}' has shape {:?}, the network expects {:?}", t.shape, want));
            } else if let Some(m) = non_finite(t) {
                value_err.push(format!("'{orig_name}' has {m}"));
            }
        }
    }
    let mut chosen: HashMap<&str, &HostTensor> = HashMap::new();
    for (orig, members) in &group {
        let present: Vec<(&str, &str, &HostTensor)> =
            members.iter().filter_map(|m| given.get(m).map(|(n, t)| (*m, *n, *t))).collect();
        let Some(&(_, first_name, first)) = present.first() else {
            missing.push(format!("'{orig}'"));
            continue;
        };
        for &(_, name, t) in &present[1..] {
            if t.shape == first.shape && t.data != first.data {
                let differ = t.data.iter().zip(&first.data).filter(|(a, b)| a != b).count();
                let largest = t.data.iter().zip(&first.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                alias_err.push(format!(
                    "'{name}' differs from '{first_name}' (the same shared module in the network): \
                     {differ} of {} values differ, by up to {largest:e}",
                    t.numel()
                ));
            }
        }
        chosen.insert(*orig, first);
    }
    let unexpected: Vec<String> =
        keyed.iter().filter(|(s, _, _)| !shapes.contains_key(s.as_str())).map(|(_, k, _)| format!("'{k}'")).collect();
    let hint = prefix_hint(&keyed, &shapes);

    let mut problems = Vec::new();
    if !keyed.is_empty() && keyed.iter().all(|(s, _, _)| !shapes.contains_key(s.as_str())) {
        problems.push(format!(
            "none of its {} keys is a key of this network (is it a checkpoint of another model?)",
            keyed.len()
        ));
    }
    list(&mut problems, "missing key", "missing keys", &missing);
    list(&mut problems, "unexpected key", "unexpected keys", &unexpected);
    problems.extend(limit(shape_err));
    problems.extend(limit(value_err));
    problems.extend(limit(alias_err));
    if !problems.is_empty() {
        let mut msg = format!("do not fit {network}: {}", problems.join("; "));
        if let Some(h) = hint {
            msg.push_str(&format!(" ({h})"));
        }
        return Err(Error::weights(path, msg));
    }

    let mut out = StateDict::new();
    for (k, _) in &expected {
        let o = original_of.get(k).map(|s| s.as_str()).unwrap_or(k.as_str());
        out.insert(k.clone(), chosen[o].clone());
    }
    Ok(out)
}

/// "3 NaN and 1 infinite values (first at flat index 17)" if any.
fn non_finite(t: &HostTensor) -> Option<String> {
    let first = t.first_non_finite()?;
    let nan = t.data.iter().filter(|v| v.is_nan()).count();
    let inf = t.data.iter().filter(|v| v.is_infinite()).count();
    Some(format!("{nan} NaN and {inf} infinite values of {} (first at flat index {first})", t.numel()))
}

fn limit(mut v: Vec<String>) -> Vec<String> {
    if v.len() > LIST_MAX {
        let more = v.len() - LIST_MAX;
        v.truncate(LIST_MAX);
        v.push(format!("and {more} more"));
    }
    v
}

fn list(out: &mut Vec<String>, one: &str, many: &str, items: &[String]) {
    match items.len() {
        0 => {}
        1 => out.push(format!("{one} {}", items[0])),
        n => {
            let shown = items.iter().take(LIST_MAX).cloned().collect::<Vec<_>>().join(", ");
            let more = if n > LIST_MAX { format!(", ... ({} more)", n - LIST_MAX) } else { String::new() };
            out.push(format!("{n} {many}: {shown}{more}"));
        }
    }
}

/// When unexpected keys are network keys under some other prefix (`model.`, `net.`), say so.
fn prefix_hint(keyed: &[(String, &str, &HostTensor)], shapes: &HashMap<&str, &Vec<usize>>) -> Option<String> {
    for (s, _, _) in keyed {
        if shapes.contains_key(s.as_str()) {
            continue;
        }
        let mut rest = s.as_str();
        while let Some(i) = rest.find('.') {
            rest = &rest[i + 1..];
            if shapes.contains_key(rest) {
                let prefix = &s[..s.len() - rest.len()];
                return Some(format!("keys seem to carry a '{prefix}' prefix that the network's keys do not have"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> StateDict {
        let mut sd = StateDict::new();
        for (i, (k, s)) in catalog::tensor_keys().into_iter().enumerate() {
            let n: usize = s.iter().product();
            let data = (0..n).map(|j| ((i * 7 + j) % 13) as f32 * 0.01).collect();
            sd.insert(k, HostTensor::new(s, data).unwrap());
        }
        // aliases filled from their originals
        canonicalize(&drop_aliases(&sd), Path::new("x")).unwrap()
    }

    fn drop_aliases(sd: &StateDict) -> StateDict {
        let aliases: Vec<String> = catalog::layers()
            .iter()
            .filter(|l| l.alias_of.is_some())
            .flat_map(|l| l.tensors().into_iter().map(|(k, _)| k))
            .collect();
        let mut out = StateDict::new();
        for (k, t) in sd.iter() {
            if !aliases.iter().any(|a| a == k) {
                out.insert(k, t.clone());
            }
        }
        out
    }

    #[test]
    fn aliases_filled_both_ways() {
        let sd = full();
        assert_eq!(sd.len(), catalog::tensor_keys().len());
        assert_eq!(sd.get("up_4.attention.conv.0.block.0.weight"), sd.get("attention_3.conv.0.block.0.weight"));
        // only the alias present: the original is filled from it
        let mut only_alias = StateDict::new();
        for (k, t) in sd.iter() {
            if !k.starts_with("attention_0.") {
                only_alias.insert(k, t.clone());
            }
        }
        let c = canonicalize(&only_alias, Path::new("x")).unwrap();
        assert_eq!(c.get("attention_0.conv1.0.weight"), sd.get("up_1.attention.conv1.0.weight"));
        let names: Vec<&str> = c.names().collect();
        let want: Vec<String> = catalog::tensor_keys().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, want.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    }

    #[test]
    fn module_prefix_is_stripped() {
        let sd = full();
        let mut p = StateDict::new();
        for (k, t) in sd.iter() {
            p.insert(format!("module.{k}"), t.clone());
        }
        let c = canonicalize(&p, Path::new("x")).unwrap();
        assert_eq!(c.get("final_conv.bias"), sd.get("final_conv.bias"));
    }

    #[test]
    fn problems_are_all_named() {
        let sd = full();
        let mut bad = StateDict::new();
        for (k, t) in sd.iter() {
            match k {
                "final_conv.bias" => {}
                "conv_0.conv3.weight" => bad.insert(k, HostTensor::zeros(vec![32, 1, 1, 1])),
                "conv_0.conv3.bias" => {
                    let mut t = t.clone();
                    t.data[3] = f32::NAN;
                    t.data[5] = f32::INFINITY;
                    bad.insert(k, t)
                }
                "up_2.attention.conv1.0.weight" => {
                    let mut t = t.clone();
                    t.data[0] += 1.0;
                    bad.insert(k, t)
                }
                _ => bad.insert(k, t.clone()),
            }
        }
        bad.insert("extra.weight", HostTensor::zeros(vec![1]));
        let e = canonicalize(&bad, Path::new("ck.pth")).unwrap_err().to_string();
        assert!(e.starts_with("weights ck.pth: "), "{e}");
        assert!(e.contains("missing key 'final_conv.bias'"), "{e}");
        assert!(e.contains("unexpected key 'extra.weight'"), "{e}");
        assert!(
            e.contains("'conv_0.conv3.weight' has shape [32, 1, 1, 1], the network expects [32, 1, 1, 1, 1]"),
            "{e}"
        );
        assert!(e.contains("'conv_0.conv3.bias' has 1 NaN and 1 infinite values of 32 (first at flat index 3)"), "{e}");
        assert!(e.contains("'up_2.attention.conv1.0.weight' differs from 'attention_1.conv1.0.weight'"), "{e}");
        assert!(e.contains("1 of 1536 values differ, by up to 1e0"), "{e}");
    }

    #[test]
    fn foreign_prefix_gets_a_hint() {
        let sd = full();
        let mut p = StateDict::new();
        for (k, t) in sd.iter() {
            p.insert(format!("model.{k}"), t.clone());
        }
        let e = canonicalize(&p, Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("none of its 171 keys is a key of this network"), "{e}");
        // missing keys are listed in the network's order
        assert!(e.contains("143 missing keys: 'conv_0.conv1.0.block.0.weight', 'conv_0.conv1.0.block.0.bias',"), "{e}");
        assert!(e.contains("'model.' prefix"), "{e}");
        assert!(e.contains("more"), "{e}");
    }

    #[test]
    fn colliding_prefixed_keys() {
        let mut p = StateDict::new();
        p.insert("final_conv.bias", HostTensor::zeros(vec![2]));
        p.insert("module.final_conv.bias", HostTensor::zeros(vec![2]));
        let e = canonicalize(&p, Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("'final_conv.bias' and 'module.final_conv.bias' both name 'final_conv.bias'"), "{e}");
    }
}
