//! Building `metav1.Condition`s the way Kubernetes expects them: the transition time moves
//! only when the status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const APPLIED: &str = "Applied";
pub const DEGRADED: &str = "Degraded";

/// Sets (or adds) the condition `type_`, keeping its `lastTransitionTime` when the status
/// is unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: i64,
    now: k8s_openapi::jiff::Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = Some(observed_generation);
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: Some(observed_generation),
            last_transition_time: Time(now),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_moves_the_transition_time_only_when_the_status_changes() {
        let t0 = k8s_openapi::jiff::Timestamp::from_second(1_000).expect("t0");
        let t1 = k8s_openapi::jiff::Timestamp::from_second(2_000).expect("t1");
        let mut c = vec![];
        set(&mut c, APPLIED, false, "Pending", "", 1, t0);
        set(&mut c, APPLIED, false, "Failed", "boom", 2, t1);
        assert_eq!(
            (
                c[0].last_transition_time.0,
                c[0].reason.as_str(),
                c[0].observed_generation
            ),
            (t0, "Failed", Some(2))
        );
        set(&mut c, APPLIED, true, "Converged", "", 2, t1);
        assert_eq!(
            (c[0].last_transition_time.0, c[0].status.as_str()),
            (t1, "True")
        );
        assert_eq!(c.len(), 1);
    }
}
