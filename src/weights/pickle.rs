//! The subset of Python's pickle machine that `torch.save` output needs, read without executing
//! anything: globals are names, `REDUCE` of a known torch/collections callable builds the value
//! it stands for, and any other callable becomes an opaque [`Value::Object`] (so an optimizer
//! state or a NumPy scalar next to the weights is carried along, never run).
//!
//! Mutable containers (dicts, lists, objects) live in a heap and are referenced by index, so a
//! container memoised before its items are set (`EMPTY_DICT BINPUT ... SETITEMS`, as every
//! pickler writes) is the same container when fetched back from the memo.
//!
//! The writer is in [`pickle_write`](super::pickle_write).

use std::collections::HashMap;
use std::rc::Rc;

use super::convert::Elem;

/// A storage named by a persistent id: `('storage', torch.FloatStorage, key, location, numel)`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: Elem,
    pub location: String,
    pub numel: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too wide for i64 (little-endian two's complement bytes).
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Tuple>),
    /// A dict, list or object in the heap.
    Heap(usize),
    /// A `module.name` global, not yet called.
    Global(Rc<(String, String)>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    /// What the value is, in Python's words, for messages.
    pub fn kind(&self, heap: &[HeapObj]) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::Global(g) => format!("{}.{}", g.0, g.1),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
            Value::Heap(i) => match heap.get(*i) {
                Some(HeapObj::Dict(d)) => d.class.clone().unwrap_or_else(|| "dict".into()),
                Some(HeapObj::List(_)) => "list".into(),
                Some(HeapObj::Object { class, .. }) => class.clone(),
                None => "?".into(),
            },
        }
    }
}

/// An immutable tuple, with its nesting depth (bounded, so that dropping or walking a
/// hostile pickle's nested tuples cannot exhaust the stack).
#[derive(Debug)]
pub struct Tuple {
    depth: usize,
    items: Vec<Value>,
}

impl std::ops::Deref for Tuple {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        &self.items
    }
}

/// Deepest tuple nesting accepted; a state dict's pickle nests four deep.
const MAX_TUPLE_DEPTH: usize = 256;

/// A dict in insertion order, with an index for the hashable keys pickles use.
#[derive(Clone, Debug, Default)]
pub struct Dict {
    /// `collections.OrderedDict` etc. when not a plain dict.
    pub class: Option<String>,
    pub items: Vec<(Value, Value)>,
    index: HashMap<HashKey, usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum HashKey {
    Str(Rc<str>),
    Int(i64),
}

impl Dict {
    fn with_class(class: Option<String>) -> Self {
        Dict { class, ..Default::default() }
    }

    pub fn set(&mut self, k: Value, v: Value) {
        let hk = match &k {
            Value::Str(s) => Some(HashKey::Str(s.clone())),
            Value::Int(i) => Some(HashKey::Int(*i)),
            _ => None,
        };
        match hk {
            Some(hk) => match self.index.get(&hk) {
                Some(&i) => self.items[i].1 = v,
                None => {
                    self.index.insert(hk, self.items.len());
                    self.items.push((k, v));
                }
            },
            None => self.items.push((k, v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.index.get(&HashKey::Str(Rc::from(key))).map(|&i| &self.items[i].1)
    }
}

#[derive(Clone, Debug)]
pub enum HeapObj {
    Dict(Dict),
    List(Vec<Value>),
    /// An instance of a class this reader does not interpret (kept, never run).
    Object {
        class: String,
        args: Value,
        state: Option<Value>,
    },
}

/// The result of unpickling: the top value and the heap it refers into.
#[derive(Debug)]
pub struct Unpickled {
    pub value: Value,
    pub heap: Vec<HeapObj>,
}

/// Why a pickle could not be read; the caller adds the file name.
#[derive(Debug)]
pub struct PickleError {
    pub pos: usize,
    pub msg: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at byte {} of the pickle)", self.msg, self.pos)
    }
}

type PResult<T> = std::result::Result<T, PickleError>;

/// Guards against pickles built to exhaust memory: no real checkpoint comes near these.
const MAX_STACK: usize = 1 << 24;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Start of the opcode being run, for messages.
    op_pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    heap: Vec<HeapObj>,
}

/// Runs the pickle in `data` to its STOP opcode.
pub fn unpickle(data: &[u8]) -> PResult<Unpickled> {
    let mut m = Machine {
        data,
        pos: 0,
        op_pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        heap: Vec::new(),
    };
    let value = m.run()?;
    Ok(Unpickled { value, heap: m.heap })
}

impl<'a> Machine<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> PResult<T> {
        Err(PickleError { pos: self.op_pos, msg: msg.into() })
    }

    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => self.err(format!("pickle ends early: {} more bytes needed, {} left", n, self.data.len() - self.pos)),
        }
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> PResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> PResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> PResult<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len_u64(&mut self) -> PResult<usize> {
        let n = self.u64()?;
        usize::try_from(n).or_else(|_| self.err(format!("length {n} too large")))
    }

    /// A text line (protocol 0 arguments), without its newline.
    fn line(&mut self) -> PResult<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("pickle ends inside a text argument");
        };
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).or_else(|_| self.err("text argument is not UTF-8"))
    }

    fn utf8(&self, b: &[u8]) -> PResult<Value> {
        match std::str::from_utf8(b) {
            Ok(s) => Ok(Value::Str(Rc::from(s))),
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }

    fn push(&mut self, v: Value) -> PResult<()> {
        if self.stack.len() >= MAX_STACK {
            return self.err("pickle stack too deep");
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> PResult<Value> {
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("pickle stack underflow"),
        }
    }

    fn top(&self) -> PResult<&Value> {
        match self.stack.last() {
            Some(v) => Ok(v),
            None => self.err("pickle stack underflow"),
        }
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return self.err("MARK expected on the stack");
        };
        if m > self.stack.len() {
            return self.err("MARK above the stack top");
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, i: u32) -> PResult<()> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn memo_get(&mut self, i: u32) -> PResult<()> {
        match self.memo.get(&i) {
            Some(v) => {
                let v = v.clone();
                self.push(v)
            }
            None => self.err(format!("memo entry {i} read before it was written")),
        }
    }

    fn alloc(&mut self, o: HeapObj) -> Value {
        self.heap.push(o);
        Value::Heap(self.heap.len() - 1)
    }

    fn int_from_le(&self, b: &[u8]) -> Value {
        if b.is_empty() {
            return Value::Int(0);
        }
        if b.len() <= 8 {
            let neg = b[b.len() - 1] & 0x80 != 0;
            let mut a = [if neg { 0xff } else { 0 }; 8];
            a[..b.len()].copy_from_slice(b);
            Value::Int(i64::from_le_bytes(a))
        } else {
            Value::BigInt(Rc::from(b))
        }
    }

    fn set_items(&mut self, target: &Value, items: Vec<Value>) -> PResult<()> {
        if !items.len().is_multiple_of(2) {
            return self.err("SETITEMS with an odd number of values");
        }
        let Value::Heap(i) = *target else {
            return self.err(format!("SETITEM(S) on a {}", target.kind(&self.heap)));
        };
        // An object of a dict subclass we do not interpret (e.g. a defaultdict) keeps its
        // items in a dict held as its state, so nothing is lost and the object stays opaque.
        let dict_index = match &self.heap[i] {
            HeapObj::Dict(_) => i,
            HeapObj::Object { state: Some(Value::Heap(d)), .. } if matches!(self.heap[*d], HeapObj::Dict(_)) => *d,
            HeapObj::Object { .. } => {
                let d = self.heap.len();
                self.heap.push(HeapObj::Dict(Dict::default()));
                if let HeapObj::Object { state, .. } = &mut self.heap[i] {
                    *state = Some(Value::Heap(d));
                }
                d
            }
            HeapObj::List(_) => return self.err("SETITEM(S) on a list"),
        };
        if let HeapObj::Dict(d) = &mut self.heap[dict_index] {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                d.set(k, v);
            }
        }
        Ok(())
    }

    fn append(&mut self, target: &Value, items: Vec<Value>) -> PResult<()> {
        let Value::Heap(i) = *target else {
            return self.err(format!("APPEND(S) on a {}", target.kind(&self.heap)));
        };
        match &mut self.heap[i] {
            HeapObj::List(l) => l.extend(items),
            // list subclasses and sets we do not interpret: ignore the items.
            HeapObj::Object { .. } => {}
            HeapObj::Dict(_) => return self.err("APPEND(S) on a dict"),
        }
        Ok(())
    }

    fn as_usize(&self, v: &Value, what: &str) -> PResult<usize> {
        match v {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            Value::Bool(b) => Ok(*b as usize),
            other => self.err(format!("{what}: expected a non-negative int, got {}", other.kind(&self.heap))),
        }
    }

    fn as_usizes(&self, v: &Value, what: &str) -> PResult<Vec<usize>> {
        match v {
            Value::Tuple(t) => t.iter().map(|x| self.as_usize(x, what)).collect(),
            Value::Heap(i) => match &self.heap[*i] {
                HeapObj::List(l) => l.iter().map(|x| self.as_usize(x, what)).collect(),
                // torch.Size pickles as a tuple, but be lenient about containers.
                _ => self.err(format!("{what}: expected a tuple of ints, got {}", v.kind(&self.heap))),
            },
            other => self.err(format!("{what}: expected a tuple of ints, got {}", other.kind(&self.heap))),
        }
    }

    fn tuple(&self, items: Vec<Value>) -> PResult<Value> {
        let depth = 1 + items.iter().map(|v| if let Value::Tuple(t) = v { t.depth } else { 0 }).max().unwrap_or(0);
        if depth > MAX_TUPLE_DEPTH {
            return self.err(format!("tuples nested more than {MAX_TUPLE_DEPTH} deep"));
        }
        Ok(Value::Tuple(Rc::new(Tuple { depth, items })))
    }

    fn tuple_args(&self, args: &Value, what: &str) -> PResult<Rc<Tuple>> {
        match args {
            Value::Tuple(t) => Ok(t.clone()),
            other => self.err(format!("{what}: arguments are a {}, not a tuple", other.kind(&self.heap))),
        }
    }

    fn rebuild_tensor(&self, args: &[Value], name: &str) -> PResult<Value> {
        if args.len() < 4 {
            return self.err(format!("{name} with {} arguments (at least 4 expected)", args.len()));
        }
        let storage = match &args[0] {
            Value::Storage(s) => s.clone(),
            other => return self.err(format!("{name}: first argument is a {}, not a storage", other.kind(&self.heap))),
        };
        let offset = self.as_usize(&args[1], "tensor storage offset")?;
        let size = self.as_usizes(&args[2], "tensor size")?;
        let stride = self.as_usizes(&args[3], "tensor stride")?;
        if size.len() != stride.len() {
            return self.err(format!("tensor size {size:?} and stride {stride:?} differ in rank"));
        }
        Ok(Value::Tensor(Rc::new(TensorRef { storage, offset, size, stride })))
    }

    /// `callable(*args)` for the callables a checkpoint holds; others become opaque objects.
    fn call(&mut self, f: Value, args: Value) -> PResult<Value> {
        let Value::Global(g) = &f else {
            return self.err(format!("REDUCE on a {}, not a global", f.kind(&self.heap)));
        };
        let (module, name) = (g.0.as_str(), g.1.as_str());
        match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                let a = self.tuple_args(&args, name)?;
                self.rebuild_tensor(&a, name)
            }
            ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
                let a = self.tuple_args(&args, name)?;
                match a.first() {
                    Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                    _ => self.err(format!("{name}: first argument is not a tensor")),
                }
            }
            // Tensor subclasses: `func(*args)` then a type change we do not need.
            ("torch._tensor", "_rebuild_from_type_v2") | ("torch.tensor", "_rebuild_from_type_v2") => {
                let a = self.tuple_args(&args, name)?;
                if a.len() < 3 {
                    return self.err(format!("{name} with {} arguments", a.len()));
                }
                self.call(a[0].clone(), a[2].clone())
            }
            ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
                let a = self.tuple_args(&args, name)?;
                let d = self.alloc(HeapObj::Dict(Dict::with_class(
                    (name == "OrderedDict").then(|| "collections.OrderedDict".to_string()),
                )));
                if let Some(init) = a.first() {
                    let pairs: Vec<Value> = match init {
                        Value::Heap(i) => match &self.heap[*i] {
                            HeapObj::List(l) => l.clone(),
                            HeapObj::Dict(src) => {
                                let flat: Vec<Value> =
                                    src.items.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect();
                                self.set_items(&d, flat)?;
                                return Ok(d);
                            }
                            _ => return self.err(format!("{name}: unsupported initialiser")),
                        },
                        Value::Tuple(t) => t.to_vec(),
                        _ => return self.err(format!("{name}: unsupported initialiser")),
                    };
                    let mut flat = Vec::with_capacity(pairs.len() * 2);
                    for p in pairs {
                        match p {
                            Value::Tuple(kv) if kv.len() == 2 => flat.extend(kv.iter().cloned()),
                            _ => return self.err(format!("{name}: initialiser items are not (key, value) pairs")),
                        }
                    }
                    self.set_items(&d, flat)?;
                }
                Ok(d)
            }
            _ => Ok(self.alloc(HeapObj::Object { class: format!("{module}.{name}"), args, state: None })),
        }
    }

    fn global(&mut self, module: &str, name: &str) -> PResult<()> {
        self.push(Value::Global(Rc::new((module.to_string(), name.to_string()))))
    }

    fn persistent_load(&mut self, pid: Value) -> PResult<Value> {
        let Value::Tuple(t) = &pid else {
            return self.err(format!("persistent id is a {}, not a tuple", pid.kind(&self.heap)));
        };
        let tag = match t.first() {
            Some(Value::Str(s)) => s.to_string(),
            Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => return self.err("persistent id without a type tag"),
        };
        if tag != "storage" {
            return self.err(format!("persistent id of type '{tag}' (only 'storage' is known)"));
        }
        if t.len() != 5 {
            return self.err(format!("storage persistent id with {} fields (5 expected)", t.len()));
        }
        let dtype = match &t[1] {
            Value::Global(g) if g.0 == "torch" => match Elem::from_storage_class(&g.1) {
                Some(d) => d,
                None => return self.err(format!("unsupported storage type torch.{}", g.1)),
            },
            other => return self.err(format!("storage type is {}, not a torch storage class", other.kind(&self.heap))),
        };
        let text = |v: &Value| match v {
            Value::Str(s) => Some(s.to_string()),
            Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        let Some(key) = text(&t[2]) else { return self.err("storage key is not a string") };
        let Some(location) = text(&t[3]) else { return self.err("storage location is not a string") };
        let numel = self.as_usize(&t[4], "storage size")?;
        Ok(Value::Storage(Rc::new(StorageRef { key, dtype, location, numel })))
    }

    fn run(&mut self) -> PResult<Value> {
        loop {
            self.op_pos = self.pos;
            let op = match self.data.get(self.pos) {
                Some(&b) => b,
                None => return self.err("pickle ends without a STOP opcode"),
            };
            self.pos += 1;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return self.err(format!("pickle protocol {p} is newer than 5"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))?
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    let v = self.int_from_le(b);
                    self.push(v)?
                }
                0x8b => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    let v = self.int_from_le(b);
                    self.push(v)?
                }
                b'I' | b'L' => {
                    let s = self.line()?;
                    let s = s.trim_end_matches('L');
                    let v = match s {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => match s.parse::<i64>() {
                            Ok(i) => Value::Int(i),
                            Err(_) => return self.err(format!("bad integer literal '{s}'")),
                        },
                    };
                    self.push(v)?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))?
                }
                b'F' => {
                    let s = self.line()?;
                    match s.parse::<f64>() {
                        Ok(f) => self.push(Value::Float(f))?,
                        Err(_) => return self.err(format!("bad float literal '{s}'")),
                    }
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    let v = self.utf8(b)?;
                    self.push(v)?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    let v = self.utf8(b)?;
                    self.push(v)?
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?;
                    let v = self.utf8(b)?;
                    self.push(v)?
                }
                // Python 2 byte strings: Python 3 decodes them as ASCII/latin-1 text.
                b'T' | b'U' => {
                    let n = if op == b'T' { self.u32()? as usize } else { self.u8()? as usize };
                    let b = self.take(n)?;
                    let s: String = b.iter().map(|&c| c as char).collect();
                    self.push(Value::Str(Rc::from(s)))?
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?;
                    self.push(Value::Bytes(Rc::from(b)))?
                }
                b')' => {
                    let v = self.tuple(Vec::new())?;
                    self.push(v)?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let v = self.tuple(items)?;
                    self.push(v)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return self.err("pickle stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let v = self.tuple(items)?;
                    self.push(v)?
                }
                b']' => {
                    let v = self.alloc(HeapObj::List(Vec::new()));
                    self.push(v)?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let v = self.alloc(HeapObj::List(items));
                    self.push(v)?
                }
                b'a' => {
                    let v = self.pop()?;
                    let target = self.top()?.clone();
                    self.append(&target, vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.append(&target, items)?
                }
                // Sets become lists: nothing in a state dict depends on set semantics.
                0x8f => {
                    let v = self.alloc(HeapObj::List(Vec::new()));
                    self.push(v)?
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.append(&target, items)?
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    let v = self.alloc(HeapObj::List(items));
                    self.push(v)?
                }
                b'}' => {
                    let v = self.alloc(HeapObj::Dict(Dict::default()));
                    self.push(v)?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let v = self.alloc(HeapObj::Dict(Dict::default()));
                    self.set_items(&v, items)?;
                    self.push(v)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.set_items(&target, items)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.global(&m, &n)?
                        }
                        _ => return self.err("STACK_GLOBAL with non-string module or name"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.call(f, args)?;
                    self.push(v)?
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.call(cls, args)?;
                    self.push(v)?
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.call(cls, args)?;
                    self.push(v)?
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?.clone();
                    // PyTorch attaches `_metadata` (module versions) to the OrderedDict this
                    // way; objects keep their state; tensors' state (hooks) is not needed.
                    if let Value::Heap(i) = target {
                        if let HeapObj::Object { state: s, .. } = &mut self.heap[i] {
                            *s = Some(state);
                        }
                    }
                }
                b'p' => {
                    let s = self.line()?;
                    match s.parse::<u32>() {
                        Ok(i) => self.memo_put(i)?,
                        Err(_) => return self.err(format!("bad memo index '{s}'")),
                    }
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?
                }
                b'g' => {
                    let s = self.line()?;
                    match s.parse::<u32>() {
                        Ok(i) => self.memo_get(i)?,
                        Err(_) => return self.err(format!("bad memo index '{s}'")),
                    }
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v)?
                }
                b'P' => return self.err("text persistent ids (protocol 0) are not used by torch.save"),
                _ => {
                    let name = match op {
                        b'i' => "INST",
                        b'o' => "OBJ",
                        0x82..=0x84 => "EXT",
                        0x97 => "NEXT_BUFFER",
                        0x98 => "READONLY_BUFFER",
                        b'S' | b'V' => "STRING/UNICODE (protocol 0)",
                        _ => "",
                    };
                    return self.err(format!(
                        "unsupported pickle opcode 0x{op:02x}{}",
                        if name.is_empty() { String::new() } else { format!(" ({name})") }
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::pickle_write::Pickler;

    fn run(b: &[u8]) -> PResult<Unpickled> {
        unpickle(b)
    }

    #[test]
    fn ints_strings_tuples() {
        // (1, -2, 300, 70000, "ab", True, None) pickled by Python with protocol 2
        let mut p = vec![0x80, 2, b'(', b'K', 1, b'J'];
        p.extend_from_slice(&(-2i32).to_le_bytes());
        p.extend_from_slice(&[b'M', 0x2c, 0x01, b'J']);
        p.extend_from_slice(&70000i32.to_le_bytes());
        p.extend_from_slice(&[b'X', 2, 0, 0, 0, b'a', b'b', 0x88, b'N', b't', b'.']);
        let u = run(&p).unwrap();
        let Value::Tuple(t) = u.value else { panic!("not a tuple") };
        assert!(matches!(t[0], Value::Int(1)));
        assert!(matches!(t[1], Value::Int(-2)));
        assert!(matches!(t[2], Value::Int(300)));
        assert!(matches!(t[3], Value::Int(70000)));
        assert!(matches!(&t[4], Value::Str(s) if &**s == "ab"));
        assert!(matches!(t[5], Value::Bool(true)));
        assert!(matches!(t[6], Value::None));
    }

    #[test]
    fn long1_negative_and_wide() {
        // LONG1 of -1 (one byte 0xff) and of 2**70 (10 bytes)
        let p = [0x80, 2, 0x8a, 1, 0xff, 0x8a, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0x86, b'.'];
        let Value::Tuple(t) = run(&p).unwrap().value else { panic!() };
        assert!(matches!(t[0], Value::Int(-1)));
        assert!(matches!(t[1], Value::BigInt(_)));
    }

    #[test]
    fn memoised_dict_is_shared() {
        // d = {}; [d, d] with d filled after memoisation: EMPTY_LIST, EMPTY_DICT, BINPUT 0,
        // SETITEM('k', 1) ... Python writes: ] q0 ( } q1 X k K1 s h1 e .
        let p =
            [0x80, 2, b']', b'q', 0, b'(', b'}', b'q', 1, b'X', 1, 0, 0, 0, b'k', b'K', 1, b's', b'h', 1, b'e', b'.'];
        let u = run(&p).unwrap();
        let Value::Heap(l) = u.value else { panic!() };
        let HeapObj::List(items) = &u.heap[l] else { panic!() };
        assert_eq!(items.len(), 2);
        let (Value::Heap(a), Value::Heap(b)) = (&items[0], &items[1]) else { panic!() };
        assert_eq!(a, b);
        let HeapObj::Dict(d) = &u.heap[*a] else { panic!() };
        assert!(matches!(d.get_str("k"), Some(Value::Int(1))));
    }

    #[test]
    fn writer_output_reads_back() {
        let mut w = Pickler::new();
        w.global("collections", "OrderedDict");
        w.empty_tuple();
        w.reduce();
        w.mark();
        for (i, k) in ["a", "b"].iter().enumerate() {
            w.str(k);
            w.global("torch._utils", "_rebuild_tensor_v2");
            w.mark();
            w.mark();
            w.str("storage");
            w.global("torch", "FloatStorage");
            w.str(&i.to_string());
            w.str("cpu");
            w.int(6);
            w.tuple();
            w.binpersid();
            w.int(0);
            w.ints_tuple(&[2, 3]);
            w.ints_tuple(&[3, 1]);
            w.bool(false);
            w.global("collections", "OrderedDict");
            w.empty_tuple();
            w.reduce();
            w.tuple();
            w.reduce();
        }
        w.setitems();
        let u = run(&w.finish()).unwrap();
        let Value::Heap(i) = u.value else { panic!() };
        let HeapObj::Dict(d) = &u.heap[i] else { panic!() };
        assert_eq!(d.items.len(), 2);
        let Some(Value::Tensor(t)) = d.get_str("b") else { panic!() };
        assert_eq!(t.size, vec![2, 3]);
        assert_eq!(t.stride, vec![3, 1]);
        assert_eq!(t.storage.key, "1");
        assert_eq!(t.storage.dtype, Elem::F32);
    }

    #[test]
    fn writer_ints_cover_every_width() {
        for v in [0usize, 255, 256, 65535, 65536, i32::MAX as usize, 1 << 40] {
            let mut w = Pickler::new();
            w.int(v);
            let u = run(&w.finish()).unwrap();
            assert!(matches!(u.value, Value::Int(x) if x == v as i64), "{v}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // Every prefix of a valid pickle, and bytes flipped one at a time.
        let mut w = Pickler::new();
        w.global("collections", "OrderedDict");
        w.empty_tuple();
        w.reduce();
        w.str("x");
        w.ints_tuple(&[1, 2, 3, 4]);
        w.setitem();
        let good = w.finish();
        assert!(run(&good).is_ok());
        for n in 0..good.len() {
            assert!(run(&good[..n]).is_err(), "prefix {n} accepted");
        }
        for i in 0..good.len() {
            for x in [0x00u8, 0xff, b'(', b'.', b'u', b'R', b'Q'] {
                let mut b = good.clone();
                b[i] = x;
                let _ = run(&b);
            }
        }
    }

    #[test]
    fn ordered_dict_from_pairs() {
        // OrderedDict([('a', 1)]): GLOBAL, MARK, EMPTY_LIST, MARK, 'a', 1, TUPLE2, APPENDS, TUPLE, REDUCE
        let mut p = vec![0x80, 2];
        p.extend_from_slice(b"ccollections\nOrderedDict\n(](X\x01\x00\x00\x00aK\x01\x86et");
        p.extend_from_slice(b"R.");
        let u = run(&p).unwrap();
        let Value::Heap(i) = u.value else { panic!() };
        let HeapObj::Dict(d) = &u.heap[i] else { panic!() };
        assert!(matches!(d.get_str("a"), Some(Value::Int(1))));
        assert_eq!(d.class.as_deref(), Some("collections.OrderedDict"));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x85u8, 1_000_000)); // TUPLE1, a million times
        p.push(b'.');
        let e = run(&p).unwrap_err();
        assert!(e.msg.contains("nested more than 256"), "{}", e.msg);
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x85u8, 200));
        p.push(b'.');
        assert!(run(&p).is_ok());
    }

    #[test]
    fn unknown_opcode_is_named() {
        let e = run(&[0x80, 2, 0xf0, b'.']).unwrap_err();
        assert!(e.msg.contains("0xf0"), "{}", e.msg);
        assert_eq!(e.pos, 2);
    }
}
