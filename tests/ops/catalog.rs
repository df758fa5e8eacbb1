//! The parameter catalog is exactly the reference checkpoint's key list.

use crate::common;

use fmseg::model::catalog;

#[test]
fn catalog_matches_reference_key_list() {
    let Some(dir) = common::fixtures_dir() else {
        return;
    };
    let text = std::fs::read_to_string(dir.join("state_dict_keys.txt")).unwrap();
    let want: Vec<(String, Vec<usize>)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, s) = l.split_once(' ').unwrap();
            let dims = s
                .trim_matches(|c| c == '(' || c == ')' || c == ' ')
                .split(',')
                .filter(|t| !t.trim().is_empty())
                .map(|t| t.trim().parse().unwrap())
                .collect();
            (k.to_string(), dims)
        })
        .collect();
    let got = catalog::tensor_keys();
    assert_eq!(got.len(), want.len(), "number of keys");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
}

#[test]
fn parameter_count_is_about_10_5_million() {
    let n = catalog::parameter_count();
    assert!((10_000_000..11_000_000).contains(&n), "{n} parameters");
}
