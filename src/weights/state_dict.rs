//! A named set of host tensors: what every weights format loads into and saves from.

use std::collections::HashMap;

use crate::tensor::HostTensor;

/// Tensors by name, in file order. Names are the reference's checkpoint keys
/// (`conv_0.conv1.0.block.0.weight`, ...).
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    entries: Vec<(String, HostTensor)>,
    index: HashMap<String, usize>,
}

impl StateDict {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces `name`, keeping the first position of a replaced name.
    pub fn insert(&mut self, name: impl Into<String>, t: HostTensor) {
        let name = name.into();
        match self.index.get(&name) {
            Some(&i) => self.entries[i].1 = t,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, t));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }
}
