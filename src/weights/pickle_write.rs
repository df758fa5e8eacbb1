//! A protocol-2 pickle writer: what `torch.save` writes, for the `.pth` writer. Its output is
//! read back by [`pickle`](super::pickle) in that module's tests.

use std::collections::HashMap;

/// A protocol-2 pickle writer for the shapes `torch.save` produces.
#[derive(Default)]
pub struct Pickler {
    pub out: Vec<u8>,
    globals: HashMap<(String, String), u32>,
    next_memo: u32,
}

impl Pickler {
    pub fn new() -> Self {
        let mut p = Self::default();
        p.out.extend_from_slice(&[0x80, 2]);
        p
    }

    fn put(&mut self) -> u32 {
        let i = self.next_memo;
        self.next_memo += 1;
        if i < 256 {
            self.out.extend_from_slice(&[b'q', i as u8]);
        } else {
            self.out.push(b'r');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
        i
    }

    fn get(&mut self, i: u32) {
        if i < 256 {
            self.out.extend_from_slice(&[b'h', i as u8]);
        } else {
            self.out.push(b'j');
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    /// `GLOBAL module name`, memoised so each global is spelled out once.
    pub fn global(&mut self, module: &str, name: &str) {
        let key = (module.to_string(), name.to_string());
        if let Some(&i) = self.globals.get(&key) {
            self.get(i);
            return;
        }
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        let i = self.put();
        self.globals.insert(key, i);
    }

    pub fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    pub fn int(&mut self, v: usize) {
        if v < 256 {
            self.out.extend_from_slice(&[b'K', v as u8]);
        } else if v < 65536 {
            self.out.push(b'M');
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= i32::MAX as usize {
            self.out.push(b'J');
            self.out.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // LONG1 with 8 bytes: always non-negative here, so the top byte is < 0x80.
            self.out.extend_from_slice(&[0x8a, 8]);
            self.out.extend_from_slice(&(v as u64).to_le_bytes());
        }
    }

    pub fn bool(&mut self, b: bool) {
        self.out.push(if b { 0x88 } else { 0x89 });
    }

    pub fn mark(&mut self) {
        self.out.push(b'(');
    }

    pub fn tuple(&mut self) {
        self.out.push(b't');
    }

    pub fn ints_tuple(&mut self, v: &[usize]) {
        match v.len() {
            0 => self.out.push(b')'),
            1..=3 => {
                for &x in v {
                    self.int(x);
                }
                self.out.push(0x84 + v.len() as u8);
            }
            _ => {
                self.mark();
                for &x in v {
                    self.int(x);
                }
                self.tuple();
            }
        }
    }

    pub fn empty_tuple(&mut self) {
        self.out.push(b')');
    }
    pub fn empty_dict(&mut self) {
        self.out.push(b'}');
    }
    pub fn reduce(&mut self) {
        self.out.push(b'R');
    }
    pub fn binpersid(&mut self) {
        self.out.push(b'Q');
    }
    pub fn setitem(&mut self) {
        self.out.push(b's');
    }
    pub fn setitems(&mut self) {
        self.out.push(b'u');
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }
}
