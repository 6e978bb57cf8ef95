//! The layer plan: one transformer layer of the GPU forward as a list of [`Op`]s over a
//! session's activation buffers, built once at load by the family's file in `arch/` from the
//! shared steps below (llama.cpp's per-model graphs built from `build_norm` / `build_attn` /
//! `build_ffn`). The model loads the weights and pipelines its plan names, a session binds
//! each op once, and a step records the ops in order: no family branches in the forward.
//!
//! Buffers (`[T, width]` f32 each, T ≤ `max_t`): `X` the residual stream `[T, dim]`, `Xn` a
//! normed copy of it or a branch before its post-norm `[T, dim]`, `Qkv` q | k | v side by side
//! `[T, (H + 2·KVH)·HD]`, `Att` the attention output `[T, H·HD]`, `GateUp` gate | up
//! `[T, 2·ffn]`, `Ffn` the gated activation `[T, ffn]`, `Post` a post-normed branch
//! `[T, dim]` (only in plans that post-norm). A fused plan ([`LayerPlan::fused`]) has no
//! `Ffn` (the down projection applies the activation to `GateUp` as it loads it) and reads
//! `Xn` only where a post-norm branch writes it.
//!
//! The shared steps: [`LayerPlan::norm`] (x → xn), [`LayerPlan::qkv`] (xn → qkv, + the file's
//! QKV bias), [`LayerPlan::qk_norm`] (per-head RMSNorm of q and k in place),
//! [`LayerPlan::attention`] (RoPE + KV append, then tree attention with the layer's reach:
//! global, or the sliding window with its own RoPE base), [`LayerPlan::attn_output`] and
//! [`LayerPlan::gated_ffn`] (a projection into the residual: accumulated in the matmul's
//! epilogue, or post-normed and added).

use super::config::Activation;

/// A session's activation buffer (see the module header for shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    X,
    Xn,
    Qkv,
    Att,
    GateUp,
    Ffn,
    Post,
}

/// A layer's RMSNorm weights (`[dim]` each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// Before attention (`attn_norm`).
    Attn,
    /// Before the FFN (`ffn_norm`).
    Ffn,
    /// On the attention branch before its residual add (`post_attention_norm`, gemma3).
    AttnPost,
    /// On the FFN branch before its residual add (`post_ffw_norm`, gemma3).
    FfnPost,
}

/// A layer's weight matrices (each possibly several same-typed runs, one matmul per run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matrix {
    /// Q, K and V, rows placed side by side in `Qkv`; with the QKV bias where the file has it.
    Qkv,
    /// The attention output projection.
    Output,
    /// Gate and up, side by side in `GateUp`.
    GateUp,
    Down,
}

/// How far a layer's attention reaches: every earlier position (RoPE base `rope_theta`), or
/// the sliding window (`sliding_window`, RoPE base `rope_theta_swa`; gemma3's local layers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Global,
    Sliding,
}

/// What a projection computes from its input before the dot products
/// ([`LayerPlan::fused`]: the op that wrote that input, run inside the matmul).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prologue {
    /// The input as it is.
    None,
    /// `rmsnorm(input) · weight`.
    Norm(Norm),
    /// `act(gate) · up` of a gate | up input (`GateUp`, twice the matrix's K wide).
    Gated(Activation),
}

/// One dispatch (or, for a projection, one matmul per same-typed run of its matrix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    RmsNorm {
        weight: Norm,
        input: Act,
        output: Act,
    },
    /// `output = W·input` (`+=` with `accumulate`: the residual add in the epilogue); with a
    /// [`Prologue`], `output = W·prologue(input)`: an RMSNorm or a gated activation fused
    /// into the matmul ([`LayerPlan::fused`]).
    Project {
        matrix: Matrix,
        input: Act,
        output: Act,
        accumulate: bool,
        prologue: Prologue,
    },
    /// Per-head RMSNorm of q and k in `Qkv` (weights `attn_q_norm` / `attn_k_norm`).
    QkNorm,
    /// RoPE on q and k in `Qkv`, k and v appended to the KV cache.
    RopeKvAppend(Reach),
    /// Tree attention of q in `Qkv` over the KV cache into `Att`.
    Attention(Reach),
    /// `Ffn = act(gate) · up` from `GateUp`.
    Gated(Activation),
    /// `into += from`.
    Add { from: Act, into: Act },
}

impl Op {
    /// The activation buffers the op reads and those it writes.
    pub fn acts(&self) -> (Vec<Act>, Vec<Act>) {
        match *self {
            Op::RmsNorm { input, output, .. } => (vec![input], vec![output]),
            Op::Project {
                input,
                output,
                accumulate,
                ..
            } => {
                let mut reads = vec![input];
                if accumulate {
                    reads.push(output);
                }
                (reads, vec![output])
            }
            Op::Add { from, into } => (vec![from, into], vec![into]),
            Op::QkNorm | Op::RopeKvAppend(_) => (vec![Act::Qkv], vec![Act::Qkv]),
            Op::Attention(_) => (vec![Act::Qkv], vec![Act::Att]),
            Op::Gated(_) => (vec![Act::GateUp], vec![Act::Ffn]),
        }
    }
}

/// Where a branch (attention or FFN) meets the residual stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residual {
    /// Accumulated onto `X` in the projection's epilogue (pre-norm families).
    Add,
    /// Written to `Xn`, RMS-normed with this weight into `Post`, then added onto `X`.
    PostNorm(Norm),
}

/// One layer's ops, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerPlan {
    pub ops: Vec<Op>,
}

impl LayerPlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Xn = rmsnorm(X) · weight`.
    pub fn norm(mut self, weight: Norm) -> Self {
        self.ops.push(Op::RmsNorm {
            weight,
            input: Act::X,
            output: Act::Xn,
        });
        self
    }

    /// `Qkv = Xn · [Wq | Wk | Wv]` (+ bias where the file has one).
    pub fn qkv(mut self) -> Self {
        self.ops.push(Op::Project {
            matrix: Matrix::Qkv,
            input: Act::Xn,
            output: Act::Qkv,
            accumulate: false,
            prologue: Prologue::None,
        });
        self
    }

    /// Per-head RMSNorm of q and k, before RoPE.
    pub fn qk_norm(mut self) -> Self {
        self.ops.push(Op::QkNorm);
        self
    }

    /// RoPE + KV append, then attention, both with `reach`.
    pub fn attention(mut self, reach: Reach) -> Self {
        self.ops.push(Op::RopeKvAppend(reach));
        self.ops.push(Op::Attention(reach));
        self
    }

    /// The attention output projection into the residual.
    pub fn attn_output(self, residual: Residual) -> Self {
        self.branch(Matrix::Output, Act::Att, residual)
    }

    /// The gated FFN (`Xn` → gate | up → `act(gate) · up` → down) into the residual.
    pub fn gated_ffn(mut self, activation: Activation, residual: Residual) -> Self {
        self.ops.push(Op::Project {
            matrix: Matrix::GateUp,
            input: Act::Xn,
            output: Act::GateUp,
            accumulate: false,
            prologue: Prologue::None,
        });
        self.ops.push(Op::Gated(activation));
        self.branch(Matrix::Down, Act::Ffn, residual)
    }

    fn branch(mut self, matrix: Matrix, input: Act, residual: Residual) -> Self {
        match residual {
            Residual::Add => self.ops.push(Op::Project {
                matrix,
                input,
                output: Act::X,
                accumulate: true,
                prologue: Prologue::None,
            }),
            Residual::PostNorm(weight) => self.ops.extend([
                Op::Project {
                    matrix,
                    input,
                    output: Act::Xn,
                    accumulate: false,
                    prologue: Prologue::None,
                },
                Op::RmsNorm {
                    weight,
                    input: Act::Xn,
                    output: Act::Post,
                },
                Op::Add {
                    from: Act::Post,
                    into: Act::X,
                },
            ]),
        }
        self
    }

    /// The plan with every RMSNorm and gated activation whose output only projections read
    /// fused into those projections' prologues ([`Prologue`], the op's input as theirs): one
    /// dispatch fewer per fused op, the same values up to f32 rounding (the matmul applies the
    /// 1/rms to its sums and computes the activation as it loads x, `shaders/matmul.q.wgsl`).
    /// An op whose output anything else reads — or nothing does, or a later op of the layer
    /// overwrites its input before a reader — stays.
    pub fn fused(self) -> Self {
        let ops = &self.ops;
        // Per op: the prologue it takes and the input it reads instead (a projection), or
        // that it is fused away (the norm or activation itself: `Prologue::None`).
        let mut into: Vec<Option<(Prologue, Act)>> = vec![None; ops.len()];
        for (i, op) in ops.iter().enumerate() {
            let (prologue, input, output) = match *op {
                Op::RmsNorm {
                    weight,
                    input,
                    output,
                } => (Prologue::Norm(weight), input, output),
                Op::Gated(a) => (Prologue::Gated(a), Act::GateUp, Act::Ffn),
                _ => continue,
            };
            // The ops that read `output` before it (or the op's input) is written again.
            // A fused reader reads the op's input instead, so that input must still hold
            // what the op read, and the reader must not write it (a matmul's x and y are
            // different buffers).
            let mut readers = Vec::new();
            let mut only_projections = true;
            let mut input_changed = false;
            for (j, later) in ops.iter().enumerate().skip(i + 1) {
                let (reads, writes) = later.acts();
                if reads.contains(&output) {
                    match later {
                        Op::Project {
                            prologue: Prologue::None,
                            ..
                        } if !input_changed && !writes.contains(&input) => readers.push(j),
                        _ => only_projections = false,
                    }
                }
                input_changed |= writes.contains(&input);
                if writes.contains(&output) {
                    break;
                }
            }
            if only_projections && !readers.is_empty() {
                for j in readers {
                    into[j] = Some((prologue, input));
                }
                into[i] = Some((Prologue::None, output));
            }
        }
        let ops = ops
            .iter()
            .zip(into)
            .filter_map(|(op, fused)| match (*op, fused) {
                (Op::RmsNorm { .. } | Op::Gated(_), Some(_)) => None,
                (
                    Op::Project {
                        matrix,
                        output,
                        accumulate,
                        ..
                    },
                    Some((prologue, input)),
                ) => Some(Op::Project {
                    matrix,
                    input,
                    output,
                    accumulate,
                    prologue,
                }),
                (op, _) => Some(op),
            })
            .collect();
        LayerPlan { ops }
    }

    /// Whether any op satisfies `f`.
    pub fn any(&self, f: impl Fn(&Op) -> bool) -> bool {
        self.ops.iter().any(f)
    }

    /// Whether the layer reads or writes `act`.
    pub fn uses_act(&self, act: Act) -> bool {
        self.any(|op| {
            let (reads, writes) = op.acts();
            reads.contains(&act) || writes.contains(&act)
        })
    }

    /// Whether the layer uses the norm weight `n` (in a norm or a projection's prologue).
    pub fn uses_norm(&self, n: Norm) -> bool {
        self.any(|op| match *op {
            Op::RmsNorm { weight, .. } => weight == n,
            Op::Project { prologue, .. } => prologue == Prologue::Norm(n),
            _ => false,
        })
    }

    /// Whether a layer's attention slides.
    pub fn slides(&self) -> bool {
        self.any(|op| matches!(op, Op::Attention(Reach::Sliding)))
    }
}

/// Whether any layer of `plans` satisfies `f` in one of its ops.
pub fn any_op(plans: &[LayerPlan], f: impl Fn(&Op) -> bool + Copy) -> bool {
    plans.iter().any(|p| p.any(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusing_moves_a_pre_norm_into_the_projections_that_read_it() {
        let pre = LayerPlan::new()
            .norm(Norm::Attn)
            .qkv()
            .attention(Reach::Global)
            .attn_output(Residual::Add)
            .norm(Norm::Ffn)
            .gated_ffn(Activation::Silu, Residual::Add);
        let fused = pre.clone().fused();
        // Both norms and the gated activation: 6 ops for the layer's 9.
        assert_eq!(fused.ops.len(), pre.ops.len() - 3);
        assert_eq!(fused.ops.len(), 6);
        assert!(!fused.any(|op| matches!(op, Op::RmsNorm { .. } | Op::Gated(_))));
        assert_eq!(
            fused.ops[0],
            Op::Project {
                matrix: Matrix::Qkv,
                input: Act::X,
                output: Act::Qkv,
                accumulate: false,
                prologue: Prologue::Norm(Norm::Attn)
            }
        );
        assert!(fused.uses_norm(Norm::Ffn) && !fused.uses_act(Act::Xn));
        assert_eq!(
            fused.ops[5],
            Op::Project {
                matrix: Matrix::Down,
                input: Act::GateUp,
                output: Act::X,
                accumulate: true,
                prologue: Prologue::Gated(Activation::Silu)
            }
        );
        assert!(!fused.uses_act(Act::Ffn));
        // Fusing twice changes nothing.
        assert_eq!(fused.clone().fused(), fused);
    }

    #[test]
    fn a_norm_read_by_anything_but_a_projection_stays() {
        // gemma3's post-norm (read by the add) stays; its pre-norms fuse.
        let post = LayerPlan::new()
            .norm(Norm::Attn)
            .qkv()
            .attn_output(Residual::PostNorm(Norm::AttnPost));
        let fused = post.fused();
        assert!(fused.uses_norm(Norm::AttnPost));
        assert_eq!(
            fused
                .ops
                .iter()
                .filter(|op| matches!(op, Op::RmsNorm { .. }))
                .count(),
            1
        );
        // A projection that would write the norm's own input cannot read it.
        let clash = LayerPlan {
            ops: vec![
                Op::RmsNorm {
                    weight: Norm::Ffn,
                    input: Act::X,
                    output: Act::Xn,
                },
                Op::Project {
                    matrix: Matrix::Down,
                    input: Act::Xn,
                    output: Act::X,
                    accumulate: true,
                    prologue: Prologue::None,
                },
            ],
        };
        assert_eq!(clash.clone().fused(), clash);
        // Nor one that reads the normed copy after the input has changed.
        let late = LayerPlan {
            ops: vec![
                clash.ops[0],
                Op::Add {
                    from: Act::Post,
                    into: Act::X,
                },
                Op::Project {
                    matrix: Matrix::GateUp,
                    input: Act::Xn,
                    output: Act::GateUp,
                    accumulate: false,
                    prologue: Prologue::None,
                },
            ],
        };
        assert_eq!(late.clone().fused(), late);
    }

    #[test]
    fn a_post_normed_branch_writes_xn_norms_into_post_and_adds() {
        let p = LayerPlan::new().attn_output(Residual::PostNorm(Norm::AttnPost));
        assert_eq!(
            p.ops,
            vec![
                Op::Project {
                    matrix: Matrix::Output,
                    input: Act::Att,
                    output: Act::Xn,
                    accumulate: false,
                    prologue: Prologue::None
                },
                Op::RmsNorm {
                    weight: Norm::AttnPost,
                    input: Act::Xn,
                    output: Act::Post
                },
                Op::Add {
                    from: Act::Post,
                    into: Act::X
                },
            ]
        );
        assert!(p.uses_act(Act::Post) && p.uses_norm(Norm::AttnPost));
        let pre = LayerPlan::new().attn_output(Residual::Add);
        assert!(!pre.uses_act(Act::Post) && pre.ops.len() == 1);
    }
}
