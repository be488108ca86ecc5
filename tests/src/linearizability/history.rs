//! Histories of key-value operations: the data model, JSON-lines storage and a
//! thread-safe recorder for concurrent clients.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value stored under a key: arbitrary bytes.
///
/// In JSON it is a string when the bytes are UTF-8, and `{"hex": "..."}`
/// otherwise, so saved histories stay readable.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Value(pub Vec<u8>);

impl Value {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value(s.into_bytes())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value(b)
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value(b.to_vec())
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Value {
    /// Renders the bytes as a quoted, ASCII-escaped string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ValueRepr {
    Text(String),
    Hex { hex: String },
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
                ValueRepr::Hex { hex }.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match ValueRepr::deserialize(d)? {
            ValueRepr::Text(t) => Ok(Value(t.into_bytes())),
            ValueRepr::Hex { hex } => {
                if hex.len() % 2 != 0 {
                    return Err(serde::de::Error::custom("odd-length hex value"));
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                            .ok_or_else(|| serde::de::Error::custom("invalid hex value"))
                    })
                    .collect::<Result<Vec<u8>, _>>()
                    .map(Value)
            }
        }
    }
}

/// What a client asked for. Each operation touches exactly one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Input {
    /// Set the key to `value`. Written values should be unique per key, so a
    /// read can be traced to the write it observed.
    Put {
        /// The value written.
        value: Value,
    },
    /// Read the key.
    Get,
    /// Remove the key.
    Delete,
    /// Compare-and-swap: if the key holds `expected` (`None` = absent), set it
    /// to `new` (`None` = delete it).
    Cas {
        /// The value the key must hold; `None` means "must be absent".
        expected: Option<Value>,
        /// The new value; `None` deletes the key.
        new: Option<Value>,
    },
}

impl Input {
    /// Whether this operation can change the register.
    pub fn is_write(&self) -> bool {
        !matches!(self, Input::Get)
    }
}

/// What a client was told. The variant must match the operation's [`Input`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Output {
    /// The put took effect.
    Put,
    /// The value read; `None` means the key was absent (distinct from an empty
    /// value).
    Get {
        /// The value read.
        value: Option<Value>,
    },
    /// The delete took effect; `deleted` (if the client knows it) says whether
    /// the key existed. `None` leaves it unchecked.
    Delete {
        /// Whether the key existed, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deleted: Option<bool>,
    },
    /// The compare-and-swap ran.
    Cas {
        /// Whether the comparison held and the swap happened.
        succeeded: bool,
        /// If the server reported it: the value after the operation
        /// (`Some(None)` = absent). `None` leaves it unchecked.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present_option"
        )]
        current: Option<Option<Value>>,
    },
}

/// Deserializes a field that is present (possibly `null`) as `Some(..)`; a
/// missing field falls back to `#[serde(default)]`, i.e. `None`.
fn present_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Value>>, D::Error> {
    Option::<Value>::deserialize(d).map(Some)
}

impl Output {
    /// Whether this output is a possible answer to `input` (same kind).
    pub fn matches(&self, input: &Input) -> bool {
        matches!(
            (input, self),
            (Input::Put { .. }, Output::Put)
                | (Input::Get, Output::Get { .. })
                | (Input::Delete, Output::Delete { .. })
                | (Input::Cas { .. }, Output::Cas { .. })
        )
    }
}

/// Identifies an operation within one history.
pub type OpId = u64;

/// One client operation: its interval in real time, what it asked and what it
/// was told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique within the history.
    pub id: OpId,
    /// The client (logical process) that issued it.
    pub client: u64,
    /// The key it touches.
    pub key: String,
    /// Invocation time (nanoseconds of a monotonic clock, or a sequence number).
    pub call: u64,
    /// Return time on the same clock; `None` when the outcome is unknown
    /// (timeout, lost connection): the operation may take effect at any point
    /// after `call`, or never.
    #[serde(default)]
    pub ret: Option<u64>,
    /// What was asked.
    pub input: Input,
    /// What was answered; `None` exactly when `ret` is `None`.
    #[serde(default)]
    pub output: Option<Output>,
}

impl Operation {
    /// Whether the client saw a definite result.
    pub fn is_completed(&self) -> bool {
        self.output.is_some()
    }

    /// Renders the input and output, e.g. `put "a" -> ok` or `get -> ?`.
    pub fn describe(&self) -> String {
        let opt = |v: &Option<Value>| match v {
            Some(v) => v.to_string(),
            None => "<absent>".to_string(),
        };
        let input = match &self.input {
            Input::Put { value } => format!("put {value}"),
            Input::Get => "get".to_string(),
            Input::Delete => "delete".to_string(),
            Input::Cas { expected, new } => format!("cas {} -> {}", opt(expected), opt(new)),
        };
        let output = match &self.output {
            None => "? (unknown outcome)".to_string(),
            Some(Output::Put) => "ok".to_string(),
            Some(Output::Get { value }) => opt(value),
            Some(Output::Delete { deleted: None }) => "ok".to_string(),
            Some(Output::Delete {
                deleted: Some(true),
            }) => "deleted".to_string(),
            Some(Output::Delete {
                deleted: Some(false),
            }) => "not found".to_string(),
            Some(Output::Cas { succeeded, current }) => {
                let verdict = if *succeeded { "succeeded" } else { "failed" };
                match current {
                    Some(c) => format!("{verdict}, now {}", opt(c)),
                    None => verdict.to_string(),
                }
            }
        };
        format!("{input} => {output}")
    }
}

/// Why a history cannot be checked.
#[derive(Debug)]
pub enum HistoryError {
    /// Reading or writing a history file failed.
    Io(io::Error),
    /// A line of a JSON-lines file did not parse.
    Parse {
        /// 1-based line number.
        line: usize,
        /// The parser's complaint.
        error: serde_json::Error,
    },
    /// An operation is inconsistent (duplicate id, output of the wrong kind,
    /// return before call, output without return time or vice versa).
    Invalid {
        /// The offending operation.
        id: OpId,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Io(e) => write!(f, "history i/o: {e}"),
            HistoryError::Parse { line, error } => write!(f, "history line {line}: {error}"),
            HistoryError::Invalid { id, reason } => write!(f, "operation {id}: {reason}"),
        }
    }
}

impl std::error::Error for HistoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HistoryError::Io(e) => Some(e),
            HistoryError::Parse { error, .. } => Some(error),
            HistoryError::Invalid { .. } => None,
        }
    }
}

impl From<io::Error> for HistoryError {
    fn from(e: io::Error) -> Self {
        HistoryError::Io(e)
    }
}

/// A complete history: every operation of a run, in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The operations.
    pub ops: Vec<Operation>,
}

impl History {
    /// Wraps a list of operations.
    pub fn new(ops: Vec<Operation>) -> Self {
        History { ops }
    }

    /// Checks that ids are unique, outputs match inputs, `ret >= call`, and
    /// `ret` and `output` are both present or both absent.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let mut ids = std::collections::HashSet::with_capacity(self.ops.len());
        for op in &self.ops {
            let invalid = |reason: &str| HistoryError::Invalid {
                id: op.id,
                reason: reason.to_string(),
            };
            if !ids.insert(op.id) {
                return Err(invalid("duplicate operation id"));
            }
            match (&op.ret, &op.output) {
                (Some(ret), Some(out)) => {
                    if *ret < op.call {
                        return Err(invalid("returns before it was invoked"));
                    }
                    if !out.matches(&op.input) {
                        return Err(invalid("output kind does not match the input"));
                    }
                }
                (None, None) => {}
                (Some(_), None) => return Err(invalid("return time without an output")),
                (None, Some(_)) => return Err(invalid("output without a return time")),
            }
        }
        Ok(())
    }

    /// Splits the history into one sub-history per key (each key is an
    /// independent register).
    pub fn by_key(&self) -> BTreeMap<String, Vec<Operation>> {
        let mut keys: BTreeMap<String, Vec<Operation>> = BTreeMap::new();
        for op in &self.ops {
            keys.entry(op.key.clone()).or_default().push(op.clone());
        }
        keys
    }

    /// Writes one JSON object per operation per line.
    pub fn write_jsonl<W: Write>(&self, mut w: W) -> Result<(), HistoryError> {
        for op in &self.ops {
            serde_json::to_writer(&mut w, op).map_err(io::Error::from)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        Ok(())
    }

    /// Reads a history written by [`History::write_jsonl`]; blank lines are
    /// skipped.
    pub fn read_jsonl<R: BufRead>(r: R) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        for (i, line) in r.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let op = serde_json::from_str(&line)
                .map_err(|error| HistoryError::Parse { line: i + 1, error })?;
            ops.push(op);
        }
        Ok(History { ops })
    }

    /// Saves the history to `path` as JSON lines.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), HistoryError> {
        self.write_jsonl(BufWriter::new(File::create(path)?))
    }

    /// Loads a history saved by [`History::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<History, HistoryError> {
        History::read_jsonl(BufReader::new(File::open(path)?))
    }
}

/// Why the recorder refused a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// No operation has this id.
    UnknownOp(OpId),
    /// The operation was already completed.
    AlreadyCompleted(OpId),
    /// The output's kind does not match the operation's input.
    WrongOutputKind(OpId),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::UnknownOp(id) => write!(f, "no operation {id}"),
            RecordError::AlreadyCompleted(id) => write!(f, "operation {id} already completed"),
            RecordError::WrongOutputKind(id) => {
                write!(f, "output kind does not match the input of operation {id}")
            }
        }
    }
}

impl std::error::Error for RecordError {}

#[derive(Debug, Default)]
struct RecorderState {
    ops: Vec<Operation>,
    /// Whether `complete`/`complete_unknown` was called, by op id (= index).
    done: Vec<bool>,
}

/// Records a history from concurrent clients. Shareable across threads (wrap
/// it in an `Arc`); times are nanoseconds since the recorder was created, on a
/// monotonic clock.
///
/// Call [`HistoryRecorder::invoke`] right before sending a request and
/// [`HistoryRecorder::complete`] right after the answer arrives, or
/// [`HistoryRecorder::complete_unknown`] when the outcome cannot be known
/// (timeout, connection lost after sending, 504). Operations never completed
/// count as unknown.
#[derive(Debug)]
pub struct HistoryRecorder {
    start: Instant,
    state: Mutex<RecorderState>,
}

impl Default for HistoryRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryRecorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        HistoryRecorder {
            start: Instant::now(),
            state: Mutex::new(RecorderState::default()),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        // A client that panicked mid-record leaves consistent data behind:
        // every mutation below is a single push or assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the invocation of `input` on `key` by `client`; returns the id
    /// to complete it with.
    pub fn invoke(&self, client: u64, key: impl Into<String>, input: Input) -> OpId {
        let key = key.into();
        // The clock is read before waiting for the lock: an earlier call time
        // only widens the interval, which can never invent a violation.
        let call = self.now();
        let mut st = self.lock();
        let id = st.ops.len() as OpId;
        st.ops.push(Operation {
            id,
            client,
            key,
            call,
            ret: None,
            input,
            output: None,
        });
        st.done.push(false);
        id
    }

    /// Records the answer to operation `id`.
    pub fn complete(&self, id: OpId, output: Output) -> Result<(), RecordError> {
        let mut st = self.lock();
        // Read the clock while holding the lock: a later return time only
        // widens the interval.
        let ret = self.now();
        let idx = usize::try_from(id).map_err(|_| RecordError::UnknownOp(id))?;
        if idx >= st.ops.len() {
            return Err(RecordError::UnknownOp(id));
        }
        if st.done[idx] {
            return Err(RecordError::AlreadyCompleted(id));
        }
        let op = &mut st.ops[idx];
        if !output.matches(&op.input) {
            return Err(RecordError::WrongOutputKind(id));
        }
        op.ret = Some(ret.max(op.call));
        op.output = Some(output);
        st.done[idx] = true;
        Ok(())
    }

    /// Records that the outcome of operation `id` will never be known.
    pub fn complete_unknown(&self, id: OpId) -> Result<(), RecordError> {
        let mut st = self.lock();
        let idx = usize::try_from(id).map_err(|_| RecordError::UnknownOp(id))?;
        if idx >= st.ops.len() {
            return Err(RecordError::UnknownOp(id));
        }
        if st.done[idx] {
            return Err(RecordError::AlreadyCompleted(id));
        }
        st.done[idx] = true;
        Ok(())
    }

    /// A snapshot of the history so far; operations still in flight appear
    /// with an unknown outcome.
    pub fn history(&self) -> History {
        History {
            ops: self.lock().ops.clone(),
        }
    }

    /// Saves [`HistoryRecorder::history`] to `path` as JSON lines.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), HistoryError> {
        self.history().save(path)
    }
}
