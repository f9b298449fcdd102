//! Clock synchronization, sans-IO: samples, per-source statistics, source selection and
//! the steering loop. All times are f64 seconds on the disciplined clock's own scale
//! ("local time"); offsets are true time minus local time.
//!
//! The clock the algorithms steer is the "NTP clock": the local clock plus any offset
//! correction still being slewed into it. An offset correction therefore takes effect on
//! it at once, whether the clock beneath steps or slews, and only frequency changes and
//! offset corrections need to be reflected in stored samples.

pub mod discipline;
pub mod filter;
pub mod regression;
pub mod sample;
pub mod select;
pub mod sourcestats;
