//! The sequential specification of one key: a register that is absent or
//! holds a value.
//!
//! [`apply`] and [`step`] are the readable specification over [`Value`]s; the
//! checker runs a compiled form (`CompiledOp`) where every value of a key is
//! interned to a small integer so states are cheap to copy, hash and compare.

use std::collections::HashMap;

use super::history::{Input, Operation, Output, Value};

/// Runs `input` against a register holding `state`; returns the new state and
/// the answer a correct server gives.
pub fn apply(state: &Option<Value>, input: &Input) -> (Option<Value>, Output) {
    match input {
        Input::Put { value } => (Some(value.clone()), Output::Put),
        Input::Get => (
            state.clone(),
            Output::Get {
                value: state.clone(),
            },
        ),
        Input::Delete => (
            None,
            Output::Delete {
                deleted: Some(state.is_some()),
            },
        ),
        Input::Cas { expected, new } => {
            if state == expected {
                (
                    new.clone(),
                    Output::Cas {
                        succeeded: true,
                        current: Some(new.clone()),
                    },
                )
            } else {
                (
                    state.clone(),
                    Output::Cas {
                        succeeded: false,
                        current: Some(state.clone()),
                    },
                )
            }
        }
    }
}

/// Whether a register holding `state` can answer `input` with `output`
/// (`None` = unknown outcome, anything goes); if so, the state afterwards.
/// Fields the client left unchecked (`deleted: None`, `current: None`) match
/// anything.
pub fn step(
    state: &Option<Value>,
    input: &Input,
    output: Option<&Output>,
) -> Option<Option<Value>> {
    let (next, correct) = apply(state, input);
    let Some(output) = output else {
        return Some(next);
    };
    let ok = match (output, &correct) {
        (Output::Put, Output::Put) => true,
        (Output::Get { value }, Output::Get { value: v }) => value == v,
        (Output::Delete { deleted }, Output::Delete { deleted: d }) => {
            deleted.is_none() || deleted == d
        }
        (
            Output::Cas { succeeded, current },
            Output::Cas {
                succeeded: s,
                current: c,
            },
        ) => succeeded == s && (current.is_none() || current == c),
        _ => false,
    };
    ok.then_some(next)
}

/// An interned register state: [`ABSENT`] or `1 + ` the index of a value.
pub(crate) type State = u32;

/// The state of a key that holds no value.
pub(crate) const ABSENT: State = 0;

/// One operation of one key in interned form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CompiledOp {
    /// A put; always allowed.
    Put(State),
    /// A read that observed the given state.
    Get(State),
    /// A delete; `deleted` checked when known.
    Delete { deleted: Option<bool> },
    /// A compare-and-swap with a known result; `current` checked when known.
    Cas {
        expected: State,
        new: State,
        succeeded: bool,
        current: Option<State>,
    },
    /// A compare-and-swap whose outcome is unknown.
    CasUnknown { expected: State, new: State },
}

impl CompiledOp {
    /// The interned form of [`step`].
    #[inline]
    pub(crate) fn step(self, state: State) -> Option<State> {
        match self {
            CompiledOp::Put(v) => Some(v),
            CompiledOp::Get(v) => (state == v).then_some(state),
            CompiledOp::Delete { deleted } => match deleted {
                Some(d) if d != (state != ABSENT) => None,
                _ => Some(ABSENT),
            },
            CompiledOp::Cas {
                expected,
                new,
                succeeded,
                current,
            } => {
                if (state == expected) != succeeded {
                    return None;
                }
                let after = if succeeded { new } else { state };
                match current {
                    Some(c) if c != after => None,
                    _ => Some(after),
                }
            }
            CompiledOp::CasUnknown { expected, new } => {
                Some(if state == expected { new } else { state })
            }
        }
    }
}

/// Maps the values of one key to [`State`]s.
#[derive(Debug, Default)]
struct Interner<'a> {
    ids: HashMap<&'a Value, State>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, v: Option<&'a Value>) -> State {
        match v {
            None => ABSENT,
            Some(v) => {
                let next = State::try_from(self.ids.len() + 1).expect("fewer than 2^32 values");
                *self.ids.entry(v).or_insert(next)
            }
        }
    }
}

/// Compiles the operations of one key. Reads with an unknown outcome constrain
/// nothing and must have been dropped by the caller.
pub(crate) fn compile<'a>(ops: impl IntoIterator<Item = &'a Operation>) -> Vec<CompiledOp> {
    let mut interner = Interner::default();
    ops.into_iter()
        .map(|op| match (&op.input, &op.output) {
            (Input::Put { value }, _) => CompiledOp::Put(interner.id(Some(value))),
            (Input::Get, Some(Output::Get { value })) => {
                CompiledOp::Get(interner.id(value.as_ref()))
            }
            (Input::Get, _) => unreachable!("unknown or mismatched reads are filtered out"),
            (Input::Delete, Some(Output::Delete { deleted })) => {
                CompiledOp::Delete { deleted: *deleted }
            }
            (Input::Delete, _) => CompiledOp::Delete { deleted: None },
            (Input::Cas { expected, new }, output) => {
                let expected = interner.id(expected.as_ref());
                let new = interner.id(new.as_ref());
                match output {
                    Some(Output::Cas { succeeded, current }) => CompiledOp::Cas {
                        expected,
                        new,
                        succeeded: *succeeded,
                        current: current.as_ref().map(|c| interner.id(c.as_ref())),
                    },
                    _ => CompiledOp::CasUnknown { expected, new },
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<Value> {
        Some(Value::from(s))
    }

    #[test]
    fn absent_and_empty_are_different_states() {
        let empty = Some(Value::from(""));
        let get_absent = Output::Get { value: None };
        let get_empty = Output::Get {
            value: empty.clone(),
        };
        assert!(step(&None, &Input::Get, Some(&get_absent)).is_some());
        assert!(step(&None, &Input::Get, Some(&get_empty)).is_none());
        assert!(step(&empty, &Input::Get, Some(&get_absent)).is_none());
        assert!(step(&empty, &Input::Get, Some(&get_empty)).is_some());
    }

    #[test]
    fn cas_outcomes_follow_the_comparison() {
        let cas = Input::Cas {
            expected: v("a"),
            new: v("b"),
        };
        let ok = |current| Output::Cas {
            succeeded: true,
            current,
        };
        let fail = |current| Output::Cas {
            succeeded: false,
            current,
        };
        assert_eq!(step(&v("a"), &cas, Some(&ok(None))), Some(v("b")));
        assert_eq!(step(&v("a"), &cas, Some(&ok(Some(v("b"))))), Some(v("b")));
        assert_eq!(step(&v("a"), &cas, Some(&ok(Some(v("a"))))), None);
        assert_eq!(step(&v("a"), &cas, Some(&fail(None))), None);
        assert_eq!(step(&v("c"), &cas, Some(&fail(None))), Some(v("c")));
        assert_eq!(step(&v("c"), &cas, Some(&fail(Some(v("c"))))), Some(v("c")));
        assert_eq!(step(&v("c"), &cas, Some(&fail(Some(None)))), None);
        assert_eq!(step(&None, &cas, None), Some(None));
        assert_eq!(step(&v("a"), &cas, None), Some(v("b")));
    }

    #[test]
    fn delete_checks_existence_only_when_known() {
        let known = |d| Output::Delete { deleted: Some(d) };
        assert_eq!(
            step(&v("a"), &Input::Delete, Some(&known(true))),
            Some(None)
        );
        assert_eq!(step(&v("a"), &Input::Delete, Some(&known(false))), None);
        assert_eq!(step(&None, &Input::Delete, Some(&known(true))), None);
        let unchecked = Output::Delete { deleted: None };
        assert_eq!(step(&None, &Input::Delete, Some(&unchecked)), Some(None));
    }

    #[test]
    fn compiled_steps_agree_with_the_specification() {
        let values = [None, v(""), v("a"), v("b")];
        let mut inputs = vec![Input::Get, Input::Delete];
        for x in &values {
            if let Some(x) = x {
                inputs.push(Input::Put { value: x.clone() });
            }
            for y in &values {
                inputs.push(Input::Cas {
                    expected: x.clone(),
                    new: y.clone(),
                });
            }
        }
        let mut outputs = vec![Output::Put, Output::Delete { deleted: None }];
        for d in [false, true] {
            outputs.push(Output::Delete { deleted: Some(d) });
        }
        for x in &values {
            outputs.push(Output::Get { value: x.clone() });
            for s in [false, true] {
                outputs.push(Output::Cas {
                    succeeded: s,
                    current: Some(x.clone()),
                });
            }
        }
        outputs.push(Output::Cas {
            succeeded: true,
            current: None,
        });
        outputs.push(Output::Cas {
            succeeded: false,
            current: None,
        });
        let mut checked = 0;
        for input in &inputs {
            for output in outputs.iter().filter(|o| o.matches(input)) {
                for known in [true, false] {
                    if !known && *input == Input::Get {
                        continue;
                    }
                    let op = Operation {
                        id: 0,
                        client: 0,
                        key: "k".into(),
                        call: 0,
                        ret: known.then_some(1),
                        input: input.clone(),
                        output: known.then(|| output.clone()),
                    };
                    // Intern every value first so each state has an id.
                    let mut all: Vec<Operation> = values
                        .iter()
                        .flatten()
                        .map(|x| Operation {
                            input: Input::Put { value: x.clone() },
                            output: Some(Output::Put),
                            ..op.clone()
                        })
                        .collect();
                    all.push(op.clone());
                    let compiled = compile(&all);
                    let id_of = |s: &Option<Value>| match s {
                        None => ABSENT,
                        Some(x) => {
                            match compiled[values.iter().flatten().position(|y| y == x).unwrap()] {
                                CompiledOp::Put(id) => id,
                                other => panic!("expected a put, got {other:?}"),
                            }
                        }
                    };
                    for state in &values {
                        let spec = step(state, input, op.output.as_ref()).map(|s| id_of(&s));
                        let fast = compiled.last().unwrap().step(id_of(state));
                        assert_eq!(spec, fast, "{} from {state:?}", op.describe());
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100, "only {checked} combinations checked");
    }
}
