//! Intake validation.
