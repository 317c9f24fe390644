//! The order of a list of sibling steps: who waits for whom, and which steps
//! can run at the same time.
//!
//! A step without `needs` runs after the step before it (a runbook reads top
//! to bottom); `needs: [a, b]` makes it wait for exactly those; `needs: []`
//! starts it at once. Validation has already refused cycles and unknown ids.

use runbook_core::model::Step;

/// For each step, the indices of the siblings it waits for.
pub fn dependencies(steps: &[Step]) -> Vec<Vec<usize>> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| match &s.needs {
            Some(needs) => needs
                .iter()
                .filter_map(|n| steps.iter().position(|o| o.id.as_deref() == Some(n.as_str())))
                .collect(),
            None if i > 0 => vec![i - 1],
            None => Vec::new(),
        })
        .collect()
}

/// The stage of each step: 1 for steps that wait for nothing, else one more than
/// the latest stage they wait for. Steps of one stage may run in parallel.
pub fn stages(deps: &[Vec<usize>]) -> Vec<usize> {
    let mut stage = vec![0usize; deps.len()];
    // Validation guarantees a DAG; bound the passes anyway so bad input cannot hang.
    for _ in 0..=deps.len() {
        let mut changed = false;
        for i in 0..deps.len() {
            let s = 1 + deps[i].iter().map(|&j| stage[j]).max().unwrap_or(0);
            if s != stage[i] {
                stage[i] = s;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    stage
}

/// Step indices in execution order: by stage, then as written.
pub fn execution_order(steps: &[Step]) -> (Vec<usize>, Vec<usize>) {
    let deps = dependencies(steps);
    let stage = stages(&deps);
    let mut order: Vec<usize> = (0..steps.len()).collect();
    order.sort_by_key(|&i| (stage[i], i));
    (order, stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, needs: Option<&[&str]>) -> Step {
        Step {
            id: Some(id.to_owned()),
            needs: needs.map(|n| n.iter().map(|s| (*s).to_owned()).collect()),
            ..Step::default()
        }
    }

    #[test]
    fn top_to_bottom_unless_needs_says_otherwise() {
        let steps = vec![
            step("a", None),
            step("b", None),
            step("c", Some(&["a"])),
            step("d", Some(&[])),
            step("e", Some(&["b", "c"])),
        ];
        let (order, stage) = execution_order(&steps);
        assert_eq!(stage, vec![1, 2, 2, 1, 3]);
        assert_eq!(order, vec![0, 3, 1, 2, 4]);
    }
}
