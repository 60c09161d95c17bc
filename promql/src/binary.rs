//! Binary operators: arithmetic, comparison (with and without `bool`), set operators, and
//! vector matching (`on`, `ignoring`, `group_left`, `group_right`).
//! <https://prometheus.io/docs/prometheus/latest/querying/operators/>

use std::collections::HashMap;

use promql_parser::label::Labels as LabelList;
use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use crate::eval::{Builder, ESeries, Evaluator, Grid, Value, by_step};
use crate::value::{Labels, METRIC_NAME};
use crate::{BadQuerySnafu, Error, Result};

/// The operator of a binary expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn parse(token: &str) -> Option<Self> {
        Some(match token {
            "+" => Self::Add,
            "-" => Self::Sub,
            "*" => Self::Mul,
            "/" => Self::Div,
            "%" => Self::Mod,
            "^" => Self::Pow,
            "atan2" => Self::Atan2,
            "==" => Self::Eq,
            "!=" => Self::Ne,
            ">" => Self::Gt,
            "<" => Self::Lt,
            ">=" => Self::Ge,
            "<=" => Self::Le,
            "and" => Self::And,
            "or" => Self::Or,
            "unless" => Self::Unless,
            _ => return None,
        })
    }

    fn is_comparison(self) -> bool {
        matches!(
            self,
            Self::Eq | Self::Ne | Self::Gt | Self::Lt | Self::Ge | Self::Le
        )
    }

    fn is_set(self) -> bool {
        matches!(self, Self::And | Self::Or | Self::Unless)
    }

    /// Arithmetic drops the metric name; comparisons and set operators keep it.
    fn drops_name(self) -> bool {
        !self.is_comparison() && !self.is_set()
    }

    /// The value and whether to keep it (comparisons keep the left value when true).
    fn apply(self, l: f64, r: f64) -> (f64, bool) {
        match self {
            Self::Add => (l + r, true),
            Self::Sub => (l - r, true),
            Self::Mul => (l * r, true),
            Self::Div => (l / r, true),
            Self::Mod => (l % r, true),
            Self::Pow => (l.powf(r), true),
            Self::Atan2 => (l.atan2(r), true),
            Self::Eq => (l, l == r),
            Self::Ne => (l, l != r),
            Self::Gt => (l, l > r),
            Self::Lt => (l, l < r),
            Self::Ge => (l, l >= r),
            Self::Le => (l, l <= r),
            Self::And | Self::Or | Self::Unless => (l, true),
        }
    }
}

/// How two vectors are matched.
struct Matching<'m> {
    on: bool,
    labels: &'m [String],
    card: &'m VectorMatchCardinality,
    include: &'m [String],
}

impl Matching<'_> {
    /// The match signature of a series.
    fn signature(&self, labels: &Labels) -> Labels {
        if self.on {
            labels.keep(self.labels)
        } else {
            let mut names = self.labels.to_vec();
            names.push(METRIC_NAME.into());
            labels.drop_names(&names)
        }
    }
}

const EMPTY: &[String] = &[];
static ONE_TO_ONE: VectorMatchCardinality = VectorMatchCardinality::OneToOne;

fn list(labels: &LabelList) -> &[String] {
    &labels.labels
}

/// Evaluates a binary expression over `grid`.
pub(crate) fn eval(ev: &mut Evaluator<'_>, expr: &BinaryExpr, grid: &Grid) -> Result<Value> {
    let token = expr.op.to_string();
    let op = Op::parse(&token).ok_or_else(|| Error::BadQuery {
        message: format!("unknown binary operator {token:?}"),
    })?;
    let return_bool = expr.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&expr.lhs, grid)?;
    let rhs = ev.eval(&expr.rhs, grid)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&l, &r)| {
                    let (v, keep) = op.apply(l, r);
                    if op.is_comparison() {
                        f64::from(u8::from(keep))
                    } else {
                        v
                    }
                })
                .collect(),
        )),
        (Value::Vector(v), Value::Scalar(s)) => Ok(Value::Vector(vector_scalar(
            op,
            v,
            &s,
            false,
            return_bool,
            grid,
        ))),
        (Value::Scalar(s), Value::Vector(v)) => Ok(Value::Vector(vector_scalar(
            op,
            v,
            &s,
            true,
            return_bool,
            grid,
        ))),
        (Value::Vector(l), Value::Vector(r)) => {
            let modifier = expr.modifier.as_ref();
            let (on, labels) = match modifier.and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(l)) => (true, list(l)),
                Some(LabelModifier::Exclude(l)) => (false, list(l)),
                None => (false, EMPTY),
            };
            let card = modifier.map_or(&ONE_TO_ONE, |m| &m.card);
            let include = card.labels().map_or(EMPTY, list);
            let matching = Matching {
                on,
                labels,
                card,
                include,
            };
            let out = if op.is_set() {
                set_op(op, &l, &r, &matching, grid)?
            } else {
                vector_vector(op, &l, &r, &matching, return_bool, grid)?
            };
            Ok(Value::Vector(out))
        }
        _ => BadQuerySnafu {
            message: format!("operator {token} is not defined for these operand types"),
        }
        .fail(),
    }
}

fn vector_scalar(
    op: Op,
    mut series: Vec<ESeries>,
    scalar: &[f64],
    scalar_left: bool,
    return_bool: bool,
    grid: &Grid,
) -> Vec<ESeries> {
    for s in &mut series {
        s.points.retain_mut(|p| {
            let x = scalar[grid.index(p.t)];
            let (l, r) = if scalar_left { (x, p.v) } else { (p.v, x) };
            let (mut v, mut keep) = op.apply(l, r);
            if op.is_comparison() && scalar_left {
                v = r;
            }
            if return_bool {
                v = f64::from(u8::from(keep));
                keep = true;
            }
            p.v = v;
            keep
        });
        if op.drops_name() || return_bool {
            s.drop_name = true;
        }
    }
    series.retain(|s| !s.points.is_empty());
    series
}

/// Signature ids of each series of both sides.
fn signatures(matching: &Matching<'_>, l: &[ESeries], r: &[ESeries]) -> (Vec<u32>, Vec<u32>) {
    let mut ids: HashMap<Labels, u32> = HashMap::new();
    let mut id = |labels: &Labels| {
        let sig = matching.signature(labels);
        let next = ids.len() as u32;
        *ids.entry(sig).or_insert(next)
    };
    let ls = l.iter().map(|s| id(&s.labels)).collect();
    let rs = r.iter().map(|s| id(&s.labels)).collect();
    (ls, rs)
}

fn set_op(
    op: Op,
    l: &[ESeries],
    r: &[ESeries],
    matching: &Matching<'_>,
    grid: &Grid,
) -> Result<Vec<ESeries>> {
    let (lsig, rsig) = signatures(matching, l, r);
    let lsteps = by_step(l, grid);
    let rsteps = by_step(r, grid);
    let mut out = Builder::default();
    for (step, (lstep, rstep)) in lsteps.iter().zip(&rsteps).enumerate() {
        let t = grid.ts(step);
        match op {
            Op::And => {
                let right: std::collections::HashSet<u32> =
                    rstep.iter().map(|&(i, _)| rsig[i]).collect();
                for &(i, v) in lstep {
                    if right.contains(&lsig[i]) {
                        out.push(l[i].labels.clone(), l[i].drop_name, t, v)?;
                    }
                }
            }
            Op::Or => {
                let left: std::collections::HashSet<u32> =
                    lstep.iter().map(|&(i, _)| lsig[i]).collect();
                for &(i, v) in lstep {
                    out.push(l[i].labels.clone(), l[i].drop_name, t, v)?;
                }
                for &(i, v) in rstep {
                    if !left.contains(&rsig[i]) {
                        out.push(r[i].labels.clone(), r[i].drop_name, t, v)?;
                    }
                }
            }
            _ => {
                let right: std::collections::HashSet<u32> =
                    rstep.iter().map(|&(i, _)| rsig[i]).collect();
                for &(i, v) in lstep {
                    if !right.contains(&lsig[i]) {
                        out.push(l[i].labels.clone(), l[i].drop_name, t, v)?;
                    }
                }
            }
        }
    }
    Ok(out.finish())
}

fn vector_vector(
    op: Op,
    l: &[ESeries],
    r: &[ESeries],
    matching: &Matching<'_>,
    return_bool: bool,
    grid: &Grid,
) -> Result<Vec<ESeries>> {
    let one_to_many = matches!(matching.card, VectorMatchCardinality::OneToMany(_));
    let one_to_one = matches!(matching.card, VectorMatchCardinality::OneToOne);
    // The "many" side is `many`, the "one" side `one`; for group_right they swap.
    let (many, one) = if one_to_many { (r, l) } else { (l, r) };
    let (many_sig, one_sig) = signatures(matching, many, one);
    let many_steps = by_step(many, grid);
    let one_steps = by_step(one, grid);
    let mut metrics: HashMap<(usize, usize), Labels> = HashMap::new();
    let mut out = Builder::default();
    for (step, (mstep, ostep)) in many_steps.iter().zip(&one_steps).enumerate() {
        if mstep.is_empty() || ostep.is_empty() {
            continue;
        }
        let t = grid.ts(step);
        let mut one_by_sig: HashMap<u32, (usize, f64)> = HashMap::with_capacity(ostep.len());
        for &(i, v) in ostep {
            if let Some(&(j, _)) = one_by_sig.get(&one_sig[i]) {
                let side = if one_to_many { "left" } else { "right" };
                let group = matching.signature(&one[i].labels);
                let mut pair = [one[i].labels.to_string(), one[j].labels.to_string()];
                pair.sort();
                return Err(Error::Execution {
                    message: format!(
                        "found duplicate series for the match group {group} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                        pair[0], pair[1]
                    ),
                });
            }
            one_by_sig.insert(one_sig[i], (i, v));
        }
        let mut matched: HashMap<u32, std::collections::HashSet<Labels>> = HashMap::new();
        for &(i, mv) in mstep {
            let sig = many_sig[i];
            let Some(&(j, ov)) = one_by_sig.get(&sig) else {
                continue;
            };
            let labels = metrics
                .entry((i, j))
                .or_insert_with(|| result_metric(&many[i].labels, &one[j].labels, matching))
                .clone();
            // Matching errors count even for samples a comparison then filters out.
            let seen = matched.entry(sig).or_default();
            if one_to_one {
                if !seen.is_empty() {
                    return Err(Error::Execution {
                        message: "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                    });
                }
                seen.insert(Labels::default());
            } else if !seen.insert(labels.clone()) {
                return Err(Error::Execution {
                    message:
                        "multiple matches for labels: grouping labels must ensure unique matches"
                            .into(),
                });
            }
            let (lv, rv) = if one_to_many { (ov, mv) } else { (mv, ov) };
            let (mut v, keep) = op.apply(lv, rv);
            if return_bool {
                v = f64::from(u8::from(keep));
            } else if !keep {
                continue;
            }
            let drop_name = op.drops_name() || return_bool || many[i].drop_name;
            out.push(labels, drop_name, t, v)?;
        }
    }
    Ok(out.finish())
}

/// The labels of a result sample: the "many" side's labels, reduced for one-to-one matching,
/// plus the `group_x` labels taken from the "one" side.
fn result_metric(many: &Labels, one: &Labels, matching: &Matching<'_>) -> Labels {
    let mut labels = if matches!(matching.card, VectorMatchCardinality::OneToOne) {
        if matching.on {
            many.keep(matching.labels)
        } else {
            many.drop_names(matching.labels)
        }
    } else {
        many.clone()
    };
    for name in matching.include {
        labels.set(name, one.get_or_empty(name));
    }
    labels
}
