//! Sentinel's gateway as a library: everything the `sentinel` binary runs, so that the fuzz
//! targets and benchmarks can reach the same code (the configuration loader above all).

pub mod api;
pub mod config;
pub mod demo;
pub mod engine_task;
pub mod event;
pub mod field;
pub mod hub;
pub mod journal;
pub mod malloc_arenas;
pub mod metrics;
pub mod modes;
pub mod notify;
pub mod plant;
pub mod reload;
pub mod rulebook;
pub mod run;
pub mod sink;
pub mod store;
pub mod systemd;
pub mod tickets;
