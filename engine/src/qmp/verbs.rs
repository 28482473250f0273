//! QEMU's words for the job's refusals, and for names that find no job or device.
//!
//! The job decides what it refuses ([`JobError`], [`ConfigError`]); these functions only
//! say it as QEMU does, so a client that matches QEMU's classes (and people who know its
//! messages) read the same thing.

use blockmirror_core::job::{
    ConfigError, JobError, JobStatus, Verb, MAX_GRANULARITY, MIN_GRANULARITY,
};

use super::error::{ErrorClass, QmpError};

/// A `block-job-*` command named no job: `DeviceNotActive`, "Block job 'X' not found".
pub fn block_job_not_found(device: &str) -> QmpError {
    QmpError::new(
        ErrorClass::DeviceNotActive,
        format!("Block job '{device}' not found"),
    )
}

/// A `job-*` command named no job: `GenericError`, "Job not found".
pub fn job_not_found() -> QmpError {
    QmpError::generic("Job not found")
}

/// `drive-mirror` named a source that does not exist.
pub fn device_not_found(device: &str) -> QmpError {
    QmpError::generic(format!(
        "Cannot find device='{device}' nor node-name='{device}'"
    ))
}

/// QEMU's word for a verb (`set-speed`); `None` for verbs QMP has no command for (`start`).
pub fn qemu_verb(verb: Verb) -> Option<&'static str> {
    match verb {
        Verb::Cancel => Some("cancel"),
        Verb::Pause => Some("pause"),
        Verb::Resume => Some("resume"),
        Verb::SetSpeed => Some("set-speed"),
        Verb::Complete => Some("complete"),
        Verb::Dismiss => Some("dismiss"),
        Verb::Change => Some("change"),
        _ => None,
    }
}

/// The job `job_id` refused a verb (or its configuration): QEMU's message, `GenericError`.
///
/// A verb the status allows but the job still refused is one of the extra checks on top of
/// the verb table: `pause` while a pause is already requested ("Job is already paused"),
/// `resume` without one ("Can't resume a job that was not paused").
pub fn job_error(job_id: &str, error: &JobError) -> QmpError {
    match error {
        JobError::VerbNotAllowed { verb, status } => verb_refused(job_id, *verb, *status),
        JobError::CancelRequested => QmpError::generic(format!(
            "The active block job '{job_id}' cannot be completed"
        )),
        JobError::Config(config) => config_error(config),
        other => QmpError::generic(other.to_string()),
    }
}

fn verb_refused(job_id: &str, verb: Verb, status: JobStatus) -> QmpError {
    if verb.allowed_in(status) {
        match verb {
            Verb::Pause => return QmpError::generic("Job is already paused"),
            Verb::Resume => return QmpError::generic("Can't resume a job that was not paused"),
            _ => {}
        }
    }
    let word = qemu_verb(verb).unwrap_or(verb.as_str());
    QmpError::generic(format!(
        "Job '{job_id}' in state '{status}' cannot accept command verb '{word}'"
    ))
}

/// The job's configuration was refused: QEMU's words for the granularity (range first,
/// then power of two, as QEMU checks), the core's for anything else.
pub fn config_error(error: &ConfigError) -> QmpError {
    match *error {
        ConfigError::Granularity(granularity)
            if !(MIN_GRANULARITY..=MAX_GRANULARITY).contains(&granularity) =>
        {
            QmpError::generic("Parameter 'granularity' expects a value in range [512B, 64MB]")
        }
        ConfigError::Granularity(_) => {
            QmpError::generic("Parameter 'granularity' expects a power of 2")
        }
        ref other => QmpError::generic(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockmirror_core::job::{MirrorConfig, MirrorJob, Nanos};

    fn job() -> MirrorJob {
        let mut config = MirrorConfig::new(1 << 20);
        config.speed_bytes_per_sec = 1;
        MirrorJob::new(config).expect("a valid configuration")
    }

    #[test]
    fn a_verb_the_status_forbids_names_job_state_and_verb() {
        let mut job = job();
        job.start(Nanos(0)).unwrap();
        let error = job.complete().unwrap_err();
        let qmp = job_error("j", &error);
        assert_eq!(qmp.class, ErrorClass::GenericError);
        assert_eq!(
            qmp.desc,
            "Job 'j' in state 'running' cannot accept command verb 'complete'"
        );
        let refused = JobError::VerbNotAllowed {
            verb: Verb::SetSpeed,
            status: JobStatus::Concluded,
        };
        assert_eq!(
            job_error("j", &refused).desc,
            "Job 'j' in state 'concluded' cannot accept command verb 'set-speed'"
        );
    }

    #[test]
    fn pause_twice_and_resume_unpaused_use_qemus_words() {
        let mut job = job();
        job.start(Nanos(0)).unwrap();
        assert_eq!(
            job_error("j", &job.resume().unwrap_err()).desc,
            "Can't resume a job that was not paused"
        );
        job.pause().unwrap();
        assert_eq!(
            job_error("j", &job.pause().unwrap_err()).desc,
            "Job is already paused"
        );
    }

    #[test]
    fn granularity_refusals_read_as_qemus() {
        let refusal = |granularity| {
            let mut config = MirrorConfig::new(1 << 20);
            config.granularity = granularity;
            config_error(&config.validate().unwrap_err()).desc
        };
        assert_eq!(
            refusal(256),
            "Parameter 'granularity' expects a value in range [512B, 64MB]"
        );
        assert_eq!(
            refusal(1 << 27),
            "Parameter 'granularity' expects a value in range [512B, 64MB]"
        );
        assert_eq!(
            refusal(1000),
            "Parameter 'granularity' expects a power of 2"
        );
    }

    #[test]
    fn not_found_classes() {
        assert_eq!(block_job_not_found("x").class, ErrorClass::DeviceNotActive);
        assert_eq!(block_job_not_found("x").desc, "Block job 'x' not found");
        assert_eq!(job_not_found().class, ErrorClass::GenericError);
        assert_eq!(
            device_not_found("x").desc,
            "Cannot find device='x' nor node-name='x'"
        );
    }
}
