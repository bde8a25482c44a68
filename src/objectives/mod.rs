pub mod ambient;
pub mod tweedie;
